package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
)

var mappingsHelp = help{
	synopsis: "pptp-alg mappings [--json] [--limit N] [--offset N] [--socket PATH]",
	about: `
List the calls the gateway carries: which LAN client talks to which
server, the client's call ID, the server's, the call ID the server was
given (NAT-ID; it differs from the client's where two clients collided),
the state (dialing until the server accepts, then up), and the GRE packets
and bytes each way (OUT is LAN to server). Counters are read live from the
kernel. A call leaves the list within 2 seconds of being cleared. A
disabled daemon carries no calls.

Calls are listed oldest first. --limit N lists at most N of them, after
skipping the first --offset; the table then ends with a line saying which
of how many it showed.

--json prints an array of objects with the fields client, client_call_id,
server, server_call_id, nat_call_id, established, packets_in, packets_out,
bytes_in, bytes_out and since (RFC 3339). With --limit or --offset it
prints one object instead: {"total": all calls, "offset": N, "mappings":
[the calls shown]}.`,
	exit: `
0  listed, even if empty
1  the daemon cannot be reached (not running, or not root) or failed
2  a bad flag`,
	example: `
pptp-alg mappings
pptp-alg mappings --json --limit 50 --offset 100`,
}

// MappingsPage is what `mappings --json --limit N` prints.
type MappingsPage struct {
	Total    int                  `json:"total"`
	Offset   int                  `json:"offset"`
	Mappings []controlapi.Mapping `json:"mappings"`
}

func runMappings(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("mappings", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	limit := fs.Int("limit", 0, "list at most `N` calls (0: all)")
	offset := fs.Int("offset", 0, "skip the first `N` calls")
	socket := fs.String("socket", defaultSocket, "control socket `path` of the daemon")
	if done, err := parseFlags(fs, mappingsHelp, args, stdout); done || err != nil {
		return err
	}
	if *limit < 0 || *offset < 0 {
		return usagef("mappings: --limit and --offset must be 0 or more (see 'pptp-alg mappings --help')")
	}
	var ms []controlapi.Mapping
	if err := controlapi.Ask(ctx, *socket, controlapi.RequestMappings, &ms); err != nil {
		return err
	}
	paged := *limit > 0 || *offset > 0
	page := pageOf(ms, *offset, *limit)
	if *asJSON {
		if paged {
			return printJSON(stdout, page)
		}
		return printJSON(stdout, page.Mappings)
	}
	if err := printMappings(stdout, page.Mappings, time.Now()); err != nil {
		return err
	}
	if paged && len(page.Mappings) > 0 {
		fmt.Fprintf(stdout, "(calls %d-%d of %d)\n", page.Offset+1, page.Offset+len(page.Mappings), page.Total)
	} else if paged && page.Total > 0 {
		fmt.Fprintf(stdout, "(%d calls, none after the first %d)\n", page.Total, page.Offset)
	}
	return nil
}

// pageOf takes limit calls (0: all) after the first offset; never nil.
func pageOf(ms []controlapi.Mapping, offset, limit int) MappingsPage {
	p := MappingsPage{Total: len(ms), Offset: offset, Mappings: []controlapi.Mapping{}}
	if offset >= len(ms) {
		return p
	}
	ms = ms[offset:]
	if limit > 0 && limit < len(ms) {
		ms = ms[:limit]
	}
	p.Mappings = append(p.Mappings, ms...)
	return p
}

func printMappings(w io.Writer, ms []controlapi.Mapping, now time.Time) error {
	rows := [][]string{{"CLIENT", "CALL-ID", "SERVER", "SERVER-ID", "NAT-ID", "STATE", "PKTS-OUT", "BYTES-OUT", "PKTS-IN", "BYTES-IN", "AGE"}}
	for _, m := range ms {
		state := "dialing"
		if m.Established {
			state = "up"
		}
		u := func(n uint64) string { return strconv.FormatUint(n, 10) }
		rows = append(rows, []string{m.Client, strconv.Itoa(m.ClientCallID), m.Server, strconv.Itoa(m.ServerCallID),
			strconv.Itoa(m.NATCallID), state, u(m.PacketsOut), u(m.BytesOut), u(m.PacketsIn), u(m.BytesIn),
			now.Sub(m.Since).Truncate(time.Second).String()})
	}
	if err := writeColumns(w, rows); err != nil {
		return err
	}
	if len(ms) == 0 {
		fmt.Fprintln(w, "(no active calls)")
	}
	return nil
}

// writeColumns writes rows as aligned columns: every cell but a row's last
// padded to its column's widest, then two spaces. (text/tabwriter would do
// it for 7 KiB of router binary.)
func writeColumns(w io.Writer, rows [][]string) error {
	var widths []int
	for _, r := range rows {
		for i, c := range r[:len(r)-1] {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len(c))
		}
	}
	bw := bufio.NewWriter(w)
	for _, r := range rows {
		for i, c := range r {
			bw.WriteString(c)
			if i < len(r)-1 {
				bw.WriteString(strings.Repeat(" ", widths[i]-len(c)+2))
			}
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

func umask(mask int) int { return syscall.Umask(mask) }
