// Command pptp-alg is a PPTP passthrough gateway for Linux routers: it
// relays PPTP control connections, translates call IDs where LAN clients
// would collide, and installs the nftables state that carries their GRE.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const defaultSocket = "/var/run/pptp-alg.sock"

const usage = `Usage: pptp-alg COMMAND [OPTIONS]
       pptp-alg --version

pptp-alg lets any number of LAN hosts behind a Linux NAT router hold PPTP
VPN tunnels at once, to the same server or to different ones. It relays
PPTP control connections (TCP 1723), translates call IDs where two clients
would collide, and installs nftables state that carries their GRE in the
kernel. It needs no kernel PPTP helper.

Commands:
  run        run the gateway in the foreground
  status     show whether it is enabled, its interfaces, calls and kernel
  enable     turn translation back on after disable
  disable    stop translating and remove every rule, without stopping
  mappings   list the active calls and their GRE counters
  drop       drop one call, closing its control connection
  doctor     check what a working passthrough needs, with a fix for each
             failure
  version    print the version

Run 'pptp-alg COMMAND --help' for what a command does and its options.

Exit status: 0 on success, 1 on a runtime failure (including a daemon
that cannot be reached, or a failed doctor check), 2 on a usage error or a
missing prerequisite (interface, kernel feature, permission).

Example:
  pptp-alg run --lan br-lan --wan wan &
  pptp-alg status
`

// usageError marks errors that exit with status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error {
	return usageError{fmt.Errorf(format, a...)}
}

// errSilent ends a command with status 1 after it printed why itself.
var errSilent = errors.New("failed")

// stopTimeout bounds how long the daemon may take to stop after SIGTERM or
// SIGINT. Every netlink exchange has a deadline, so removing what it
// installed takes far less; past it, the process exits anyway.
const stopTimeout = 15 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second signal ends the process at once
		time.Sleep(stopTimeout)
		fmt.Fprintf(os.Stderr, "pptp-alg: still stopping after %v; exiting\n", stopTimeout)
		os.Exit(1)
	}()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	if err != errSilent {
		fmt.Fprintln(os.Stderr, "pptp-alg:", err)
	}
	if errors.As(err, new(usageError)) {
		os.Exit(2)
	}
	os.Exit(1)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	switch args[0] {
	case "run":
		return runDaemon(ctx, args[1:], stdout, stderr)
	case "status":
		return runStatus(ctx, args[1:], stdout)
	case "enable":
		return runToggle(ctx, "enable", args[1:], stdout)
	case "disable":
		return runToggle(ctx, "disable", args[1:], stdout)
	case "mappings":
		return runMappings(ctx, args[1:], stdout)
	case "drop":
		return runDrop(ctx, args[1:], stdout)
	case "doctor":
		return runDoctor(ctx, args[1:], stdout)
	case "version", "--version", "-version", "-V":
		fmt.Fprintln(stdout, "pptp-alg", version)
		return nil
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return usagef("unknown command %q (see 'pptp-alg --help')", args[0])
	}
}

// help is a command's manual page; options come from its flag set.
type help struct {
	synopsis string // "pptp-alg status [--json] [--socket PATH]"
	about    string // what the command does
	exit     string // exit status, one line each
	example  string
}

// parseFlags parses a command's flags. -h or --help prints the manual page
// to stdout and reports done, for the command to end with status 0. A bad
// flag or a stray argument is a usage error that points at --help.
func parseFlags(fs *flag.FlagSet, h help, args []string, stdout io.Writer) (done bool, err error) {
	fs.SetOutput(io.Discard) // the error comes back to main, which prints it
	fs.Usage = func() {}
	err = fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		printHelp(stdout, fs, h)
		return true, nil
	case err != nil:
		return true, usagef("%s: %v (see 'pptp-alg %s --help')", fs.Name(), err, fs.Name())
	case fs.NArg() > 0:
		return true, usagef("%s: unexpected argument %q (see 'pptp-alg %s --help')", fs.Name(), fs.Arg(0), fs.Name())
	}
	return false, nil
}

func printHelp(w io.Writer, fs *flag.FlagSet, h help) {
	fmt.Fprintf(w, "Usage: %s\n\n%s\n", h.synopsis, strings.TrimSpace(h.about))
	var opts strings.Builder
	fs.SetOutput(&opts)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	if opts.Len() > 0 {
		fmt.Fprintf(w, "\nOptions (one dash or two):\n%s", opts.String())
	}
	fmt.Fprintf(w, "\nExit status:\n%s\n", indent(h.exit))
	fmt.Fprintf(w, "\nExample:\n%s\n", indent(h.example))
}

func indent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = "  " + l
	}
	return strings.Join(lines, "\n")
}
