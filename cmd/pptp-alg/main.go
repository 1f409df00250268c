// Command pptp-alg is a PPTP passthrough gateway for Linux routers: it
// relays PPTP control connections, translates call IDs where LAN clients
// would collide, and installs the nftables state that carries their GRE.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const defaultSocket = "/var/run/pptp-alg.sock"

const usage = `Usage: pptp-alg COMMAND [OPTIONS]

pptp-alg lets any number of LAN hosts behind a Linux NAT router hold PPTP
VPN tunnels at once, to the same server or to different ones. It relays
PPTP control connections (TCP 1723), translates call IDs where two clients
would collide, and installs nftables state that carries their GRE in the
kernel. It needs no kernel PPTP helper.

Commands:
  run        run the gateway in the foreground
  mappings   list the active calls and their GRE counters
  version    print the version

Run 'pptp-alg COMMAND --help' for a command's options.

Exit status: 0 on success, 1 on a runtime failure, 2 on a usage error or a
missing prerequisite (interface, kernel feature, permission).
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
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "pptp-alg:", err)
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
		return runDaemon(ctx, args[1:], stderr)
	case "mappings":
		return runMappings(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "pptp-alg", version)
		return nil
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usagef("unknown command %q", args[0])
	}
}
