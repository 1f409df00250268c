package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
	"github.com/pptp-alg/pptp-alg/conntrack"
	"github.com/pptp-alg/pptp-alg/nat"
)

var doctorHelp = help{
	synopsis: "pptp-alg doctor [--socket PATH]",
	about: `
Check what a working PPTP passthrough needs, one line per check, "ok" or
"FAIL" with the fix on the line after. It works with or without a running
daemon. It changes nothing. Run it as root on the router.

  nftables            the ruleset can be read (root, nf_tables)
  nftables features   the kernel has what the daemon's table uses: maps
                      with concatenated keys and counters, notrack, nat
                      chains, redirect, fib, tproxy (tried in a batch the
                      kernel checks and then refuses: it commits nothing)
  fast path features  the kernel has nftables' netdev family and fwd,
                      which the GRE fast path uses
  ctnetlink           the conntrack table can be read
  IPv4 forwarding     net.ipv4.ip_forward is on
  kernel PPTP helper  no rule assigns the kernel's own PPTP helper
                      (nf_conntrack_pptp): it carries PPTP when pptp-alg
                      does not, and in the input or output hook can land
                      on the router's own relayed connections, which
                      pptp-alg then refuses. On OpenWrt fw4 assigns it
                      once kmod-nf-nathelper-extra is installed
  forwarded GRE       every forward chain accepts the untracked GRE that
                      pptp-alg translates (on OpenWrt, pptp-alg's fw4
                      include does), or has policy accept
  daemon              pptp-alg run answers on its socket and is enabled
  GRE fast path       the running daemon forwards known calls' GRE from
                      the interfaces' ingress (nftables netdev and fwd;
                      OpenWrt: kmod-nft-netdev), unless --fast-path=false
  router's own PPTP   when the daemon relays the router's own PPTP
                      connections (--router-calls), every input chain
                      accepts the untracked GRE of those calls (on
                      OpenWrt, pptp-alg's fw4 input include does)
  PPTP server         only when something on the router listens on
                      tcp/1723 (pptpd) on an address other than the LAN's:
                      the input chain accepts tcp/1723 and GRE, which its
                      clients on the WAN need (pptp-alg leaves that PPTP
                      alone; fw4 accepts it from the LAN by default)`,
	exit: `
0  every check passed
1  a check failed
2  a bad flag`,
	example: `pptp-alg doctor`,
}

// check is one line of the doctor's report.
type check struct {
	name   string
	ok     bool
	detail string
	fix    string // for a failure
}

// system is what the doctor looks at; tests give fakes.
type system struct {
	daemon    func(context.Context) (controlapi.Status, error)
	ruleset   func() (nat.Ruleset, error)
	probe     func() []nat.Finding // the kernel's nftables features
	conntrack func() error         // read the conntrack table
	ipForward func() (bool, error)
	// pptpListeners are the local addresses with a TCP socket listening
	// on port 1723 (the unspecified address for all).
	pptpListeners func() ([]netip.Addr, error)
}

func runDoctor(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	socket := fs.String("socket", defaultSocket, "control socket `path` of the daemon")
	if done, err := parseFlags(fs, doctorHelp, args, stdout); done || err != nil {
		return err
	}
	if !printChecks(stdout, diagnose(ctx, hostSystem(*socket))) {
		return errSilent
	}
	return nil
}

// hostSystem is the doctor's view of this machine's current network
// namespace and of the daemon at socket.
func hostSystem(socket string) system {
	return system{
		daemon: func(ctx context.Context) (controlapi.Status, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var st controlapi.Status
			err := controlapi.Ask(ctx, socket, controlapi.RequestStatus, &st)
			return st, err
		},
		ruleset: func() (nat.Ruleset, error) { return nat.InspectRuleset() },
		probe:   func() []nat.Finding { return nat.Probe(0) },
		conntrack: func() error {
			t, err := conntrack.Open()
			if err != nil {
				return err
			}
			defer t.Close()
			none := netip.AddrPortFrom(netip.IPv4Unspecified(), 0) // no connection: "not found"
			_, err = t.Helper(none, none)
			return err
		},
		ipForward: func() (bool, error) {
			b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
			return strings.TrimSpace(string(b)) == "1", err
		},
		pptpListeners: func() ([]netip.Addr, error) {
			b, err := os.ReadFile("/proc/net/tcp")
			if err != nil {
				return nil, err
			}
			return tcpListeners(string(b), 1723), nil
		},
	}
}

// tcpListeners returns the local addresses of the sockets listening on port
// in the text of /proc/net/tcp, whose lines read "sl local_address
// rem_address st ...", the address as the hex of the in-memory (network
// order) value read as a host integer, st 0A for LISTEN.
func tcpListeners(text string, port uint16) []netip.Addr {
	var out []netip.Addr
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "0A" {
			continue
		}
		addr, p, ok := strings.Cut(f[1], ":")
		a, aerr := strconv.ParseUint(addr, 16, 32)
		n, perr := strconv.ParseUint(p, 16, 16)
		if !ok || aerr != nil || perr != nil || uint16(n) != port {
			continue
		}
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], uint32(a))
		out = append(out, netip.AddrFrom4(b))
	}
	return out
}

// fixRoot is the fix for a permission error.
const fixRoot = "run it as root (it needs CAP_NET_ADMIN)"

func denied(err error) bool { return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) }

func diagnose(ctx context.Context, sys system) []check {
	var cs []check
	add := func(name string, err error, okDetail, failDetail, fix string) {
		if err == nil {
			cs = append(cs, check{name: name, ok: true, detail: okDetail})
			return
		}
		if denied(err) {
			fix = fixRoot
		}
		cs = append(cs, check{name: name, detail: failDetail + ": " + err.Error(), fix: fix})
	}

	st, daemonErr := sys.daemon(ctx)
	rs, rulesetErr := sys.ruleset()
	add("nftables", rulesetErr, "the ruleset is readable", "cannot read the ruleset",
		"the kernel needs nf_tables (OpenWrt: kmod-nft-core)")

	cs = append(cs, featureChecks(sys.probe())...)

	add("ctnetlink", sys.conntrack(), "the conntrack table is readable", "cannot read the conntrack table",
		"load nf_conntrack_netlink (OpenWrt: kmod-nf-conntrack-netlink)")

	forward, err := sys.ipForward()
	if err == nil && !forward {
		err = errors.New("net.ipv4.ip_forward is 0")
	}
	add("IPv4 forwarding", err, "on", "the router does not forward", "sysctl -w net.ipv4.ip_forward=1, and set it in /etc/sysctl.conf")

	if rulesetErr != nil {
		for _, name := range []string{"kernel PPTP helper", "forwarded GRE"} {
			cs = append(cs, check{name: name, detail: "not checked: the ruleset cannot be read", fix: "see the nftables check"})
		}
	} else {
		if len(rs.PPTPHelper) == 0 {
			cs = append(cs, check{name: "kernel PPTP helper", ok: true, detail: "no rule assigns it"})
		}
		for _, h := range rs.PPTPHelper {
			cs = append(cs, check{name: "kernel PPTP helper", detail: "assigned in " + helperWhere(h) + ": " + helperEffect(h.SeesRelayedConnections(st.LANControl == lanControlRedirect)), fix: helperFix(h)})
		}
		ok, detail, fix := forwardFinding(rs)
		cs = append(cs, check{name: "forwarded GRE", ok: ok, detail: detail, fix: fix})
	}

	switch {
	case denied(daemonErr):
		cs = append(cs, check{name: "daemon", detail: "cannot ask it: " + daemonErr.Error(), fix: fixRoot})
	case daemonErr != nil:
		cs = append(cs, check{name: "daemon", detail: "not running: " + daemonErr.Error(),
			fix: "start it: pptp-alg run --lan IFACE --wan IFACE (see 'pptp-alg run --help')"})
	case !st.Enabled:
		cs = append(cs, check{name: "daemon", detail: "running but disabled: PPTP is not translated", fix: "pptp-alg enable"})
	default:
		cs = append(cs, check{name: "daemon", ok: true, detail: fmt.Sprintf("running and enabled, LAN %s, WAN %s (%s), %s, %s",
			strings.Join(st.LAN, ","), st.WAN, st.WANAddr, plural(st.ControlConnections, "control connection"), plural(st.Calls, "call"))})
		cs = append(cs, fastPathCheck(st))
		if st.RouterCalls {
			cs = append(cs, routerCallsCheck(rs, rulesetErr))
		}
	}
	if sys.pptpListeners != nil {
		if c, ok := pptpServerCheck(sys.pptpListeners, rs, rulesetErr, st); ok {
			cs = append(cs, c)
		}
	}
	return cs
}

// dropInputs are the input chains that drop what they do not accept.
func dropInputs(rs nat.Ruleset) []nat.InputChain {
	var out []nat.InputChain
	for _, in := range rs.Input {
		if in.Policy == "drop" {
			out = append(out, in)
		}
	}
	return out
}

// routerCallsCheck: the router's own relayed calls' GRE is translated and
// untracked, and must pass the input chains.
func routerCallsCheck(rs nat.Ruleset, rulesetErr error) check {
	c := check{name: "router's own PPTP"}
	if rulesetErr != nil {
		c.detail, c.fix = "not checked: the ruleset cannot be read", "see the nftables check"
		return c
	}
	var bad, fixes []string
	for _, in := range dropInputs(rs) {
		if in.AcceptsUntrackedGRE {
			continue
		}
		name := in.Table + " " + in.Chain
		bad = append(bad, name)
		if in.Table == "inet fw4" {
			fixes = append(fixes, "install pptp-alg's fw4 include as "+fw4InputInclude+" and run fw4 reload")
		} else {
			fixes = append(fixes, "nft insert rule "+name+" meta l4proto gre ct state untracked accept")
		}
	}
	if len(bad) > 0 {
		c.detail = "relayed, but " + strings.Join(bad, ", ") + " does not accept their untracked GRE: the router's own PPTP client gets no GRE back"
		c.fix = strings.Join(fixes, "; ")
		return c
	}
	c.ok = true
	c.detail = "relayed with the LAN's, so their call IDs never collide; the input chain accepts their GRE (no Allow-GRE rule needed)"
	return c
}

// fw4InputInclude is pptp-alg's fw4 include for the input chain.
const fw4InputInclude = "/usr/share/nftables.d/chain-pre/input/30-pptp-alg.nft"

// pptpServerCheck reports on a PPTP server on the router, if one listens
// on an address its WAN clients can reach: every input chain must accept
// tcp/1723 and GRE. ok is false when there is nothing to say.
func pptpServerCheck(listeners func() ([]netip.Addr, error), rs nat.Ruleset, rulesetErr error, st controlapi.Status) (c check, ok bool) {
	c = check{name: "PPTP server"}
	addrs, err := listeners()
	if err != nil || len(addrs) == 0 {
		return c, false
	}
	var wan []string
	for _, a := range addrs {
		// Reachable from the WAN: every address, or the WAN's own (or any
		// other when the WAN address is not known).
		if a.IsUnspecified() || st.WANAddr == "" || a.String() == st.WANAddr {
			wan = append(wan, a.String()+":1723")
		}
	}
	if len(wan) == 0 {
		c.ok, c.detail = true, "listens on tcp/1723 of LAN addresses only; pptp-alg does not relay connections to the router"
		return c, true
	}
	where := "listens on " + strings.Join(wan, ", ")
	if rulesetErr != nil {
		c.detail, c.fix = where+"; not checked: the ruleset cannot be read", "see the nftables check"
		return c, true
	}
	var bad []string
	for _, in := range dropInputs(rs) {
		if !in.AcceptsPPTP || !in.AcceptsGRE {
			bad = append(bad, in.Table+" "+in.Chain)
		}
	}
	if len(bad) > 0 {
		c.detail = where + ", but " + strings.Join(bad, ", ") + " has no rule accepting tcp/1723 and GRE: clients on the WAN cannot connect " +
			"(pptp-alg leaves this PPTP alone; clients on the LAN may)"
		c.fix = "accept tcp/1723 and GRE from the WAN (fw4: two rules, src wan, proto tcp dest_port 1723 and proto gre, target ACCEPT)"
		return c, true
	}
	c.ok, c.detail = true, where+"; the input chain accepts tcp/1723 and GRE; pptp-alg leaves this PPTP alone"
	return c, true
}

// fastPathTurnedOff is Status.FastPathOff when --fast-path=false.
var fastPathTurnedOff = nat.ErrFastPathOff.Error()

// fastPathCheck reports on the running daemon's GRE fast path. Off is a
// failure only when the daemon wanted it: GRE still flows, more slowly.
func fastPathCheck(st controlapi.Status) check {
	c := check{name: "GRE fast path"}
	switch {
	case st.FastPath:
		c.ok, c.detail = true, "on, at the ingress of "+ingressDevices(st.WAN, st.LAN)
	case st.FastPathOff == fastPathTurnedOff:
		c.ok, c.detail = true, "turned off (--fast-path=false): GRE goes through the ip table and the firewall"
	default:
		c.detail = "off, GRE goes through the ip table and the firewall, more slowly: " + st.FastPathOff
		c.fix = "the kernel needs nftables' netdev family and fwd (OpenWrt: kmod-nft-netdev; " +
			"CONFIG_NETFILTER_INGRESS, CONFIG_NF_TABLES_NETDEV, CONFIG_NFT_FWD_NETDEV), then restart pptp-alg"
	}
	return c
}

// printChecks prints the report and reports whether every check passed.
func printChecks(w io.Writer, cs []check) bool {
	failed := 0
	for _, c := range cs {
		if c.ok {
			fmt.Fprintf(w, "ok    %s: %s\n", c.name, c.detail)
			continue
		}
		failed++
		fmt.Fprintf(w, "FAIL  %s: %s\n      fix: %s\n", c.name, c.detail, c.fix)
	}
	fmt.Fprintf(w, "%d of %d checks passed\n", len(cs)-failed, len(cs))
	return failed == 0
}
