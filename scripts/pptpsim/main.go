// Command pptpsim is pptp-alg's own PPTP peer simulator for the end-to-end
// tests. It plays either side of RFC 2637: a PAC ("server", answering the
// control messages of section 2 and echoing each call's enhanced GRE of
// section 4) or a PNS ("client", opening calls and pinging through them).
// Unlike pptpd and pptp-linux it can choose its call IDs, carry several
// calls on one control connection and cut control messages into odd TCP
// segments, which is what a NAT helper gets wrong.
//
// Results are JSON lines on stdout, one object per event; logs go to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usage = `Usage: pptpsim server [OPTIONS]
       pptpsim client --server ADDR [OPTIONS]

pptpsim simulates a PPTP peer (RFC 2637) for pptp-alg's end-to-end tests.
Both sides speak the control protocol on TCP and enhanced GRE on a raw IP
socket, so they need root (CAP_NET_RAW). Run them in different network
namespaces; two simulators in one namespace must use different addresses,
since each raw GRE socket sees every GRE packet for its address.

server  A PAC. It accepts control connections, gives every call a server
        call ID unique across all connections, and echoes each call's GRE
        back to its sender with the client's call ID. It runs until
        SIGTERM or SIGINT, then exits 0.

client  A PNS. It opens one control connection, places every call on it,
        sends GRE pings through each call and counts the echoes, then ends
        as --then says. It exits 0 if every call was connected and every
        ping echoed (and, with --then clear, every call cleared), else 1.

Output (stdout), one JSON object a line, "event" first:
  server: listening, connected, call, sli, gre, clear, stop, closed
  client: call (one per call and ping round), done (one per round),
          cleared, holding, closed, error (no connection or no
          Start-Control-Connection-Reply)

Options take one dash or two. Exit status: 0 success, 1 failure, 2 usage
error.
`

// usageError marks errors that exit with status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error {
	return usageError{fmt.Errorf(format, a...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "pptpsim:", err)
	if errors.As(err, new(usageError)) {
		os.Exit(2)
	}
	os.Exit(1)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	out := &emitter{w: stdout}
	switch args[0] {
	case "server":
		fs, cfg, verbose := serverFlags()
		if help, err := parse(fs, args[1:], stderr); help || err != nil {
			return err
		}
		return runServer(ctx, *cfg, out, newLogger(stderr, *verbose, "server"))
	case "client":
		fs, cfg, verbose := clientFlags()
		if help, err := parse(fs, args[1:], stderr); help || err != nil {
			return err
		}
		if err := cfg.check(); err != nil {
			return usageError{err}
		}
		return runClient(ctx, cfg.clientConfig, stdin, out, newLogger(stderr, *verbose, "client"))
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, fullUsage())
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usagef("unknown command %q", args[0])
}

// parse parses args. After -h, which printed the command's help, it
// reports help so that the command ends with status 0.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer) (help bool, err error) {
	fs.SetOutput(stderr)
	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return true, nil
	case err != nil:
		return false, usageError{err}
	case fs.NArg() > 0:
		return false, usagef("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return false, nil
}

func fullUsage() string {
	var b strings.Builder
	b.WriteString(usage)
	for _, fs := range []*flag.FlagSet{first(serverFlags()), first(clientFlags())} {
		fmt.Fprintf(&b, "\n%s options:\n", fs.Name())
		fs.SetOutput(&b)
		fs.PrintDefaults()
	}
	return b.String()
}

func first[A, B, C any](a A, _ B, _ C) A { return a }

func serverFlags() (*flag.FlagSet, *serverConfig, *bool) {
	cfg := &serverConfig{firstCallID: 1000, cdn: cdnRFC, segment: segmentNormal}
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage, "\nserver options:\n"); fs.PrintDefaults() }
	fs.StringVar(&cfg.listen, "listen", "0.0.0.0:1723",
		"`ADDR:PORT` to accept control connections on; the GRE socket binds ADDR (port 0: any, see the listening event)")
	fs.Func("first-call-id", "first server call `ID` handed out; later calls count up from it, skipping IDs in use (default 1000)",
		func(s string) error {
			v, err := strconv.ParseUint(s, 0, 16)
			cfg.firstCallID = uint16(v)
			return err
		})
	fs.Func("cdn", "which call ID a Call-Disconnect-Notify carries, `MODE` rfc: the server's (RFC 2637 section 2.13); kernel: the client's, as Linux nf_conntrack_pptp reads it (default rfc)",
		func(s string) error {
			switch m := cdnMode(s); m {
			case cdnRFC, cdnKernel:
				cfg.cdn = m
				return nil
			}
			return fmt.Errorf("want rfc or kernel")
		})
	fs.BoolVar(&cfg.earlyGRE, "early-gre", false,
		"right after each Outgoing-Call-Reply, send one GRE packet with the client's call ID to the connection's peer, as pppd's first LCP frame would")
	fs.BoolVar(&cfg.sendSLI, "send-sli", false,
		"after each Outgoing-Call-Reply, send a Set-Link-Info carrying the client's call ID")
	fs.Func("segment", "how replies are written, `MODE` normal: a write per message; split: every message in 1, 3, 7... byte chunks 2 ms apart; coalesce: all replies to one read in one write (default normal)",
		func(s string) (err error) {
			cfg.segment, err = parseSegmentMode(s)
			return err
		})
	verbose := fs.Bool("v", false, "log every message and packet to stderr")
	return fs, cfg, verbose
}

// clientFlagValues is a clientConfig as the flags leave it, before check.
type clientFlagValues struct {
	clientConfig
	calls    int
	callIDs  string
	localStr string
}

func clientFlags() (*flag.FlagSet, *clientFlagValues, *bool) {
	cfg := &clientFlagValues{clientConfig: clientConfig{segment: segmentNormal, then: thenClear}}
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage, "\nclient options:\n"); fs.PrintDefaults() }
	fs.StringVar(&cfg.server, "server", "",
		"the server's real `ADDR` (port 1723 unless ADDR:PORT); a router in between intercepts; GRE goes to the same address (required)")
	fs.StringVar(&cfg.localStr, "local", "",
		"local `ADDR` of the control connection and GRE socket (default: the kernel's choice)")
	fs.IntVar(&cfg.calls, "calls", 0, "`N` calls on the one control connection (default 1, or the number of --call-ids)")
	fs.StringVar(&cfg.callIDs, "call-ids", "",
		"comma-separated client call `IDs`, one per call; repeats are allowed (default 1..N)")
	fs.Func("segment", "how requests are written, `MODE` normal: a write per message; split: every message in 1, 3, 7... byte chunks 2 ms apart; coalesce: all Outgoing-Call-Requests in one write, likewise the Set-Link-Infos and the Call-Clear-Requests (default normal)",
		func(s string) (err error) {
			cfg.segment, err = parseSegmentMode(s)
			return err
		})
	fs.IntVar(&cfg.pings, "pings", 3, "`K` GRE pings per call and round, sent with the server's call ID; the server echoes them")
	fs.Func("then", "what to do after the pings, `ACTION` clear: Call-Clear-Request each call, report the call ID in each Call-Disconnect-Notify, then Stop-Control-Connection-Request and close; close: close with a FIN; reset: close with a RST; hold: keep the calls up and read commands from stdin, one a line (ping: another round of pings; clear, close, reset: as above), closing with a FIN at end of stdin or on a signal (default clear)",
		func(s string) (err error) {
			cfg.then, err = parseThen(s)
			return err
		})
	fs.BoolVar(&cfg.sli, "sli", false, "send a Set-Link-Info with the server's call ID for each call, before the pings")
	fs.DurationVar(&cfg.wait, "wait", 3*time.Second, "how long to wait for each round's echoes and for Call-Disconnect-Notify")
	verbose := fs.Bool("v", false, "log every message and packet to stderr")
	return fs, cfg, verbose
}

// check turns the flag values into the client's configuration.
func (cfg *clientFlagValues) check() error {
	if cfg.server == "" {
		return errors.New("client: --server is required")
	}
	if _, _, err := net.SplitHostPort(cfg.server); err != nil {
		cfg.server = net.JoinHostPort(cfg.server, "1723")
	}
	if cfg.localStr != "" {
		if cfg.local = net.ParseIP(cfg.localStr); cfg.local == nil {
			return fmt.Errorf("client: --local %q is not an IP address", cfg.localStr)
		}
	}
	if cfg.callIDs != "" {
		for s := range strings.SplitSeq(cfg.callIDs, ",") {
			id, err := strconv.ParseUint(strings.TrimSpace(s), 0, 16)
			if err != nil {
				return fmt.Errorf("client: --call-ids: %w", err)
			}
			cfg.clientConfig.callIDs = append(cfg.clientConfig.callIDs, uint16(id))
		}
	}
	switch n := len(cfg.clientConfig.callIDs); {
	case n > 0 && cfg.calls != 0 && cfg.calls != n:
		return fmt.Errorf("client: --calls %d but %d --call-ids", cfg.calls, n)
	case n == 0 && cfg.calls < 0, n == 0 && cfg.calls > 1<<16-1:
		return fmt.Errorf("client: --calls %d out of range", cfg.calls)
	case n == 0:
		for i := range max(cfg.calls, 1) {
			cfg.clientConfig.callIDs = append(cfg.clientConfig.callIDs, uint16(i+1))
		}
	}
	if cfg.pings < 0 {
		return fmt.Errorf("client: --pings %d is negative", cfg.pings)
	}
	if cfg.wait <= 0 {
		return fmt.Errorf("client: --wait %v must be positive", cfg.wait)
	}
	return nil
}

func newLogger(w io.Writer, verbose bool, side string) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("side", side)
}
