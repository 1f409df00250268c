package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
)

var mappingsHelp = help{
	synopsis: "pptp-alg mappings [--json] [--socket PATH]",
	about: `
List the calls the gateway carries: which LAN client talks to which
server, the client's call ID, the server's, the call ID the server was
given (NAT-ID; it differs from the client's where two clients collided),
the state (dialing until the server accepts, then up), and the GRE packets
and bytes each way (OUT is LAN to server). Counters are read live from the
kernel. A call leaves the list within 2 seconds of being cleared. A
disabled daemon carries no calls.

--json prints an array of objects with the fields client, client_call_id,
server, server_call_id, nat_call_id, established, packets_in, packets_out,
bytes_in, bytes_out and since (RFC 3339).`,
	exit: `
0  listed, even if empty
1  the daemon cannot be reached (not running, or not root) or failed
2  a bad flag`,
	example: `
pptp-alg mappings
pptp-alg mappings --json`,
}

func runMappings(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("mappings", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	socket := fs.String("socket", defaultSocket, "control socket `path` of the daemon")
	if done, err := parseFlags(fs, mappingsHelp, args, stdout); done || err != nil {
		return err
	}
	var ms []controlapi.Mapping
	if err := controlapi.Ask(ctx, *socket, controlapi.RequestMappings, &ms); err != nil {
		return err
	}
	if *asJSON {
		if ms == nil {
			ms = []controlapi.Mapping{}
		}
		return printJSON(stdout, ms)
	}
	return printMappings(stdout, ms, time.Now())
}

func printMappings(w io.Writer, ms []controlapi.Mapping, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tCALL-ID\tSERVER\tSERVER-ID\tNAT-ID\tSTATE\tPKTS-OUT\tBYTES-OUT\tPKTS-IN\tBYTES-IN\tAGE")
	for _, m := range ms {
		state := "dialing"
		if m.Established {
			state = "up"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%s\n",
			m.Client, m.ClientCallID, m.Server, m.ServerCallID, m.NATCallID, state,
			m.PacketsOut, m.BytesOut, m.PacketsIn, m.BytesIn, now.Sub(m.Since).Truncate(time.Second))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(ms) == 0 {
		fmt.Fprintln(w, "(no active calls)")
	}
	return nil
}

func umask(mask int) int { return syscall.Umask(mask) }
