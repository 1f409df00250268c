package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"syscall"
	"text/tabwriter"
	"time"
)

const mappingsUsage = `Usage: pptp-alg mappings [--json] [--socket PATH]

List the calls the gateway carries: which LAN client talks to which
server, the client's call ID, the server's, the call ID the server was
given (NAT-ID; it differs from the client's where two clients collided),
and the GRE packets and bytes each way (OUT is LAN to server). Counters
are read live from the kernel. A call leaves the list within 2 seconds of
being cleared.

Options:
`

func runMappings(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mappings", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, mappingsUsage)
		fs.PrintDefaults()
	}
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	socket := fs.String("socket", defaultSocket, "control socket `path` of the daemon")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("mappings: unexpected argument %q", fs.Arg(0))
	}
	var ms []Mapping
	if err := ask(ctx, *socket, "mappings", &ms); err != nil {
		return err
	}
	if *asJSON {
		if ms == nil {
			ms = []Mapping{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(ms)
	}
	return printMappings(stdout, ms, time.Now())
}

func printMappings(w io.Writer, ms []Mapping, now time.Time) error {
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
