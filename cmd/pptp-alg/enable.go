package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
)

// `pptp-alg enable` and `pptp-alg disable`: translation on and off without
// a restart. The daemon's side is d.enable and d.disable (daemon.go).

func (d *daemon) toggle(on bool) (controlapi.ToggleReply, error) {
	var r controlapi.ToggleReply
	start := time.Now()
	if on {
		changed, err := d.enable()
		if err != nil {
			return r, fmt.Errorf("enable: %w", err)
		}
		if r.Changed = changed; changed {
			d.log.Info("enabled by request", "took", time.Since(start).Round(time.Microsecond))
		}
	} else {
		changed, calls, err := d.disable()
		if err != nil {
			return r, fmt.Errorf("disable: %w", err)
		}
		if r.Changed = changed; changed {
			d.log.Info("disabled by request", "calls_released", calls, "took", time.Since(start).Round(time.Microsecond))
		}
		r.CallsReleased = calls
	}
	r.Status = d.status()
	return r, nil
}

var enableHelp = help{
	synopsis: "pptp-alg enable [--socket PATH]",
	about: `
Turn translation back on after 'pptp-alg disable', without a restart: the
daemon installs its nftables table again (the tproxy of LAN tcp/1723 to
its relay, and the GRE maps) and its policy rule and accepts control connections. Tunnels
opened while it was disabled were carried by whatever the firewall does
instead (the kernel's PPTP helper, if assigned); their GRE is none of
pptp-alg's and goes on as before, unless a new relayed call takes one's
call ID toward the same server. Enabling an enabled daemon changes
nothing.`,
	exit: `
0  enabled, or already enabled
1  the daemon cannot be reached, or could not enable (the reason is printed)
2  a bad flag`,
	example: `pptp-alg enable`,
}

var disableHelp = help{
	synopsis: "pptp-alg disable [--socket PATH]",
	about: `
Stop translating PPTP without stopping the daemon: it closes every relayed
control connection, releasing their calls, and deletes its nftables table
and its policy rule and route, so no rule of its own is left. New control
connections are no longer relayed: PPTP falls back to whatever the firewall does (with fw4 and no
kernel helper, that means no LAN tunnel works; the router's own PPTP
client then needs an Allow-GRE rule). 'pptp-alg enable' brings
everything back. The daemon keeps running and answering status. Disabling
a disabled daemon changes nothing. A restart starts it enabled.`,
	exit: `
0  disabled, or already disabled
1  the daemon cannot be reached, or could not remove its table
2  a bad flag`,
	example: `pptp-alg disable && nft list table ip pptp_alg  # no such table`,
}

func runToggle(ctx context.Context, cmd string, args []string, stdout io.Writer) error {
	h := enableHelp
	if cmd == "disable" {
		h = disableHelp
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	socket := fs.String("socket", defaultSocket, "control socket `path` of the daemon")
	if done, err := parseFlags(fs, h, args, stdout); done || err != nil {
		return err
	}
	var r controlapi.ToggleReply
	if err := controlapi.Ask(ctx, *socket, cmd, &r); err != nil {
		return err
	}
	fmt.Fprintln(stdout, toggleText(cmd, r))
	return nil
}

func toggleText(cmd string, r controlapi.ToggleReply) string {
	switch {
	case !r.Changed:
		return "pptp-alg: already " + cmd + "d"
	case cmd == "enable":
		return fmt.Sprintf("pptp-alg: enabled; nftables table ip %s installed", r.Status.Table)
	default:
		return fmt.Sprintf("pptp-alg: disabled; nftables table ip %s removed, %s released",
			r.Status.Table, plural(r.CallsReleased, "call"))
	}
}
