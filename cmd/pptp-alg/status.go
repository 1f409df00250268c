package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pptp-alg/pptp-alg/nat"
)

// Status is the daemon's state as `pptp-alg status --json` prints it.
type Status struct {
	Version string   `json:"version"`
	Enabled bool     `json:"enabled"`
	LAN     []string `json:"lan"`
	WAN     string   `json:"wan"`
	// WANAddr is the address calls leave from; "" while disabled.
	WANAddr   string `json:"wan_addr"`
	RelayPort int    `json:"relay_port"`
	Table     string `json:"table"` // nftables table, family ip
	// FastPath says whether known calls' GRE is forwarded from ingress
	// (the netdev table of the same name); FastPathOff says why not.
	FastPath           bool     `json:"fast_path"`
	FastPathOff        string   `json:"fast_path_off,omitempty"`
	ControlConnections int      `json:"control_connections"`
	Calls              int      `json:"calls"`
	KernelFeatures     []string `json:"kernel_features"`
	// KernelPPTPHelper lists where a rule assigns the kernel's own PPTP
	// helper; empty when none does.
	KernelPPTPHelper []HelperUse `json:"kernel_pptp_helper"`
	// RulesetError says why KernelPPTPHelper could not be found out.
	RulesetError string `json:"ruleset_error,omitempty"`
}

// toggleReply answers enable and disable.
type toggleReply struct {
	Changed bool `json:"changed"`
	// CallsReleased counts the calls a disable ended.
	CallsReleased int    `json:"calls_released"`
	Status        Status `json:"status"`
}

func (d *daemon) status() Status {
	d.mu.Lock()
	st := Status{
		Version:        version,
		Enabled:        d.gw != nil,
		LAN:            d.cfg.lan,
		WAN:            d.cfg.wan,
		RelayPort:      int(d.cfg.relayPort),
		Table:          d.cfg.table,
		KernelFeatures: d.features,
	}
	if d.gw != nil {
		st.WANAddr = d.wanAddr.Load().String()
		st.ControlConnections = d.table.Sessions()
		st.Calls = len(d.table.Calls())
		on, why := d.plane.FastPath()
		st.FastPath = on
		if !on && why != nil {
			st.FastPathOff = why.Error()
		}
	}
	d.mu.Unlock()
	rs, err := nat.InspectRuleset()
	if err != nil {
		st.RulesetError = err.Error()
	}
	st.KernelPPTPHelper = helperUses(rs)
	return st
}

func (d *daemon) toggle(on bool) (toggleReply, error) {
	var r toggleReply
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

var statusHelp = help{
	synopsis: "pptp-alg status [--json] [--socket PATH]",
	about: `
Ask the running daemon how it stands: whether it is enabled (translating
PPTP) or disabled, its LAN and WAN interfaces, the WAN address its calls
leave from, its relay port and nftables table, how many control
connections and calls it carries, whether GRE takes the fast path (the
interfaces' ingress hooks) and why not, the kernel features it found at
start-up, and whether a rule assigns the kernel's own PPTP helper, which
conflicts with it ('pptp-alg doctor' gives the fix).

--json prints one object with the fields version, enabled, lan, wan,
wan_addr, relay_port, table, fast_path (and fast_path_off, why not),
control_connections, calls, kernel_features
and kernel_pptp_helper (a list of {where, sees_relayed_connections, fix}),
and ruleset_error when the ruleset could not be read.`,
	exit: `
0  the daemon answered, enabled or disabled
1  the daemon cannot be reached (not running, or not root) or failed
2  a bad flag`,
	example: `
pptp-alg status
pptp-alg status --json | jsonfilter -e '@.calls'`,
}

func runStatus(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print one JSON object instead of text")
	socket := fs.String("socket", defaultSocket, "control socket `path` of the daemon")
	if done, err := parseFlags(fs, statusHelp, args, stdout); done || err != nil {
		return err
	}
	var st Status
	if err := ask(ctx, *socket, "status", &st); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	printStatus(stdout, st)
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ingressDevices names the interfaces whose ingress the fast path hooks:
// the WAN, then each LAN.
func ingressDevices(wan string, lan []string) string {
	return strings.Join(append([]string{wan}, lan...), ", ")
}

func printStatus(w io.Writer, st Status) {
	state := "enabled"
	if !st.Enabled {
		state = "disabled: PPTP passes the firewall untranslated ('pptp-alg enable' turns it back on)"
	}
	wan := st.WAN
	if st.WANAddr != "" {
		wan += ", address " + st.WANAddr
	}
	kernel := "none found"
	if len(st.KernelFeatures) > 0 {
		kernel = strings.Join(st.KernelFeatures, ", ")
	}
	fmt.Fprintf(w, "pptp-alg %s: %s\n", st.Version, state)
	fmt.Fprintf(w, "LAN:          %s\n", strings.Join(st.LAN, ", "))
	fmt.Fprintf(w, "WAN:          %s\n", wan)
	fmt.Fprintf(w, "relay:        tcp port %d, nftables table ip %s\n", st.RelayPort, st.Table)
	fmt.Fprintf(w, "carrying:     %s, %s\n", plural(st.ControlConnections, "control connection"), plural(st.Calls, "call"))
	if st.Enabled {
		fast := fmt.Sprintf("on (ingress of %s, nftables table netdev %s)", ingressDevices(st.WAN, st.LAN), st.Table)
		if !st.FastPath {
			fast = "off, GRE goes through the ip table: " + st.FastPathOff
		}
		fmt.Fprintf(w, "fast path:    %s\n", fast)
	}
	fmt.Fprintf(w, "kernel:       %s\n", kernel)
	switch {
	case st.RulesetError != "":
		fmt.Fprintf(w, "PPTP helper:  unknown, cannot read the ruleset: %s\n", st.RulesetError)
	case len(st.KernelPPTPHelper) == 0:
		fmt.Fprintf(w, "PPTP helper:  not assigned\n")
	default:
		for _, h := range st.KernelPPTPHelper {
			effect := "after pptp-alg's redirect"
			if h.SeesRelayedConnections {
				effect = "CONFLICT: can land on relayed connections, which are refused"
			}
			fmt.Fprintf(w, "PPTP helper:  assigned in %s; %s ('pptp-alg doctor' gives the fix)\n", h.Where, effect)
		}
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

var enableHelp = help{
	synopsis: "pptp-alg enable [--socket PATH]",
	about: `
Turn translation back on after 'pptp-alg disable', without a restart: the
daemon installs its nftables table again (the redirect of LAN tcp/1723 to
its relay, and the GRE maps) and accepts control connections. Tunnels
opened while it was disabled were carried by whatever the firewall does
instead; their GRE is dropped from now on, and they must reconnect.
Enabling an enabled daemon changes nothing.`,
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
control connection, releasing their calls, and deletes its nftables table,
so no rule of its own is left. New control connections are no longer
redirected: PPTP falls back to whatever the firewall does (with fw4 and no
kernel helper, that means no tunnel works). 'pptp-alg enable' brings
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
	var r toggleReply
	if err := ask(ctx, *socket, cmd, &r); err != nil {
		return err
	}
	fmt.Fprintln(stdout, toggleText(cmd, r))
	return nil
}

func toggleText(cmd string, r toggleReply) string {
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
