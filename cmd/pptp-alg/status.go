package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
	"github.com/pptp-alg/pptp-alg/nat"
)

// Status.LANControl's values.
const (
	lanControlTProxy   = "tproxy"
	lanControlRedirect = "redirect"
)

func (d *daemon) status() controlapi.Status {
	d.mu.Lock()
	st := controlapi.Status{
		Version:        version,
		Enabled:        d.gw != nil,
		LAN:            d.cfg.lan,
		WAN:            d.cfg.wan,
		RelayPort:      int(d.cfg.relayPort),
		RouterCalls:    d.cfg.routerCalls,
		Table:          d.cfg.table,
		KernelFeatures: d.features,
	}
	if d.gw != nil {
		st.WANAddr = d.wanAddr.Load().String()
		st.ControlConnections = d.table.Sessions()
		st.Calls = len(d.table.Calls())
		on, why := d.plane.FastPath()
		st.FastPath = on
		st.TablesOwned = d.owner
		st.LANControl = lanControlTProxy
		if d.redirect.Load() {
			st.LANControl = lanControlRedirect
		}
		if !on && why != nil {
			st.FastPathOff = why.Error()
		}
	}
	d.mu.Unlock()
	rs, err := nat.InspectRuleset()
	if err != nil {
		st.RulesetError = err.Error()
	}
	st.KernelPPTPHelper = helperUses(rs, st.LANControl == lanControlRedirect)
	return st
}

// lanControlDetail says how LAN control connections reach the relay, and
// what the redirect costs when the tables are not owned.
func lanControlDetail(mode string, owned bool) string {
	switch {
	case mode != lanControlRedirect:
		return "by tproxy"
	case owned:
		return "by NAT redirect"
	}
	return "by NAT redirect; " + flushResets
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
wan_addr, relay_port, router_calls, table, lan_control ("tproxy" or
"redirect", see 'pptp-alg run --help'), tables_owned (their flag owner
keeps them through 'nft flush ruleset'), fast_path (and fast_path_off, why
not), control_connections, calls, kernel_features
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
	var st controlapi.Status
	if err := controlapi.Ask(ctx, *socket, controlapi.RequestStatus, &st); err != nil {
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

func printStatus(w io.Writer, st controlapi.Status) {
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
		if st.LANControl != "" {
			fmt.Fprintf(w, "LAN control:  %s\n", lanControlDetail(st.LANControl, st.TablesOwned))
		}
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
