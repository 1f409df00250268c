package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
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
                      chains, redirect, fib (tried in a batch the kernel
                      checks and then refuses: it commits nothing)
  fast path features  the kernel has nftables' netdev family and fwd,
                      which the GRE fast path uses
  ctnetlink           the conntrack table can be read
  IPv4 forwarding     net.ipv4.ip_forward is on
  kernel PPTP helper  no rule assigns the kernel's own PPTP helper
                      (nf_conntrack_pptp): it carries PPTP when pptp-alg
                      does not, and can land on connections pptp-alg
                      relays, which it then refuses. On OpenWrt fw4
                      assigns it once kmod-nf-nathelper-extra is installed
  forwarded GRE       every forward chain accepts the untracked GRE that
                      pptp-alg translates (on OpenWrt, pptp-alg's fw4
                      include does), or has policy accept
  daemon              pptp-alg run answers on its socket and is enabled
  GRE fast path       the running daemon forwards known calls' GRE from
                      the interfaces' ingress (nftables netdev and fwd;
                      OpenWrt: kmod-nft-netdev), unless --fast-path=false`,
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
	}
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
			cs = append(cs, check{name: "kernel PPTP helper", detail: "assigned in " + helperWhere(h) + ": " + helperEffect(h), fix: helperFix(h)})
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
	}
	return cs
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
