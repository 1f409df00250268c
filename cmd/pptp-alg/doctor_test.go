package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/nat"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
)

var (
	fw4Forward = nat.ForwardChain{
		BaseChain:           nat.BaseChain{Table: "inet fw4", Chain: "forward", Hook: "forward", Policy: "drop"},
		AcceptsUntrackedGRE: true,
	}
	fw4Helper = nat.HelperRule{Table: "inet fw4", Chain: "helper_lan",
		From: []nat.BaseChain{{Table: "inet fw4", Chain: "prerouting", Hook: "prerouting", Priority: 0, Policy: "accept"}}}
	earlyHelper = nat.HelperRule{Table: "ip mine", Chain: "out",
		From: []nat.BaseChain{{Table: "ip mine", Chain: "out", Hook: "output", Priority: -150, Policy: "accept"}}}
)

// healthy is a router where every check passes; each case changes it.
func healthy() system {
	return system{
		daemon: func(context.Context) (controlapi.Status, error) {
			st := enabledStatus()
			st.RelayPort = 2000
			return st, nil
		},
		ruleset:   func() (nat.Ruleset, error) { return nat.Ruleset{Forward: []nat.ForwardChain{fw4Forward}}, nil },
		probe:     func() []nat.Finding { return findings(nil) },
		conntrack: func() error { return nil },
		ipForward: func() (bool, error) { return true, nil },
	}
}

func TestDiagnose(t *testing.T) {
	okLines := []string{
		"ok    nftables: the ruleset is readable",
		"ok    nftables features: nftables, maps with concatenated keys and counters, notrack, nat chains, redirect, fib, tproxy, table owner",
		"ok    fast path features: netdev family, fwd",
		"ok    ctnetlink: the conntrack table is readable",
		"ok    IPv4 forwarding: on",
		"ok    kernel PPTP helper: no rule assigns it",
		"ok    forwarded GRE: inet fw4 forward accepts untracked GRE",
		"ok    daemon: running and enabled, LAN br-lan,br-guest, WAN wan (203.0.113.1), 1 control connection, 2 calls",
		"ok    GRE fast path: on, at the ingress of wan, br-lan, br-guest",
	}
	with := func(i int, lines ...string) []string {
		out := append([]string(nil), okLines[:i]...)
		out = append(out, lines...)
		if i == 7 {
			return out // no daemon to ask about its fast path
		}
		return append(out, okLines[i+1:]...)
	}
	eperm := fmt.Errorf("nat: list tables: %w", unix.EPERM)
	for _, tc := range []struct {
		name   string
		change func(*system)
		want   []string
	}{
		{"healthy", func(*system) {}, okLines},
		{"fw4 assigns the helper", func(s *system) {
			s.ruleset = func() (nat.Ruleset, error) {
				return nat.Ruleset{PPTPHelper: []nat.HelperRule{fw4Helper}, Forward: []nat.ForwardChain{fw4Forward}}, nil
			}
		}, with(5,
			"FAIL  kernel PPTP helper: assigned in inet fw4 chain helper_lan (prerouting priority 0): it never sees the connections pptp-alg relays, so relayed tunnels work, but it carries PPTP while pptp-alg is stopped or disabled; those tunnels outlive pptp-alg's start unless a relayed call takes one's call ID toward its server",
			"      fix: fw4 assigns it to zone lan: "+fixHelperFW4)},
		{"two helper rules", func(s *system) {
			s.ruleset = func() (nat.Ruleset, error) {
				return nat.Ruleset{PPTPHelper: []nat.HelperRule{earlyHelper, {Table: "ip mine", Chain: "orphan"}}, Forward: []nat.ForwardChain{fw4Forward}}, nil
			}
		}, with(5,
			"FAIL  kernel PPTP helper: assigned in ip mine chain out (output priority -150): it can land on relayed control connections, which pptp-alg then refuses: their tunnels fail",
			`      fix: delete the rule that sets ct helper "pptp" in ip mine chain out (nft -a list chain ip mine out shows its handle)`,
			"FAIL  kernel PPTP helper: assigned in ip mine chain orphan (reached from no base chain pptp-alg can follow): it can land on relayed control connections, which pptp-alg then refuses: their tunnels fail",
			`      fix: delete the rule that sets ct helper "pptp" in ip mine chain orphan (nft -a list chain ip mine orphan shows its handle)`)},
		{"fw4 without the include", func(s *system) {
			s.ruleset = func() (nat.Ruleset, error) {
				f := fw4Forward
				f.AcceptsUntrackedGRE = false
				return nat.Ruleset{Forward: []nat.ForwardChain{f}}, nil
			}
		}, with(6,
			"FAIL  forwarded GRE: inet fw4 forward does not accept untracked GRE, which is how pptp-alg forwards it",
			"      fix: install pptp-alg's fw4 include as /usr/share/nftables.d/chain-pre/forward/30-pptp-alg.nft and run fw4 reload")},
		{"another firewall", func(s *system) {
			s.ruleset = func() (nat.Ruleset, error) {
				return nat.Ruleset{Forward: []nat.ForwardChain{
					{BaseChain: nat.BaseChain{Table: "ip filter", Chain: "FORWARD", Hook: "forward", Policy: "drop"}},
					{BaseChain: nat.BaseChain{Table: "inet open", Chain: "fwd", Hook: "forward", Policy: "accept"}},
				}}, nil
			}
		}, with(6,
			"FAIL  forwarded GRE: ip filter FORWARD does not accept untracked GRE, which is how pptp-alg forwards it",
			"      fix: nft insert rule ip filter FORWARD meta l4proto gre ct state untracked accept")},
		{"no forward filter", func(s *system) {
			s.ruleset = func() (nat.Ruleset, error) { return nat.Ruleset{}, nil }
		}, with(6, "ok    forwarded GRE: no nftables chain filters forwarded IPv4")},
		{"daemon disabled", func(s *system) {
			s.daemon = func(context.Context) (controlapi.Status, error) { return controlapi.Status{RelayPort: 2000}, nil }
		}, with(7, "FAIL  daemon: running but disabled: PPTP is not translated", "      fix: pptp-alg enable")},
		{"fast path off", func(s *system) {
			s.daemon = func(context.Context) (controlapi.Status, error) {
				st := enabledStatus()
				st.FastPath, st.FastPathOff = false, "nat: fast path: operation not supported"
				return st, nil
			}
		}, with(8, "FAIL  GRE fast path: off, GRE goes through the ip table and the firewall, more slowly: nat: fast path: operation not supported",
			"      fix: the kernel needs nftables' netdev family and fwd (OpenWrt: kmod-nft-netdev; CONFIG_NETFILTER_INGRESS, CONFIG_NF_TABLES_NETDEV, CONFIG_NFT_FWD_NETDEV), then restart pptp-alg")},
		{"fast path turned off", func(s *system) {
			s.daemon = func(context.Context) (controlapi.Status, error) {
				st := enabledStatus()
				st.FastPath, st.FastPathOff = false, "turned off"
				return st, nil
			}
		}, with(8, "ok    GRE fast path: turned off (--fast-path=false): GRE goes through the ip table and the firewall")},
		{"no daemon", func(s *system) {
			s.daemon = func(context.Context) (controlapi.Status, error) {
				return controlapi.Status{}, errors.New("connect: no such file or directory")
			}
		}, with(7, "FAIL  daemon: not running: connect: no such file or directory",
			"      fix: start it: pptp-alg run --lan IFACE --wan IFACE (see 'pptp-alg run --help')")},
		{"forwarding off", func(s *system) {
			s.ipForward = func() (bool, error) { return false, nil }
		}, with(4, "FAIL  IPv4 forwarding: the router does not forward: net.ipv4.ip_forward is 0",
			"      fix: sysctl -w net.ipv4.ip_forward=1, and set it in /etc/sysctl.conf")},
		{"kernel lacks a feature", func(s *system) {
			s.probe = func() []nat.Finding { return findings(map[string]error{"redirect": unix.ENOENT, "fwd": unix.ENOENT}) }
			s.conntrack = func() error { return fmt.Errorf("conntrack: dump: %w", unix.EOPNOTSUPP) }
		}, append(append(append([]string(nil), okLines[:1]...),
			"FAIL  nftables features: the kernel lacks nftables' redirect (no such file or directory)",
			"      fix: load or build in nft_redir (CONFIG_NFT_REDIR) (OpenWrt: kmod-nft-nat)",
			"FAIL  fast path features: the kernel lacks nftables' fwd (no such file or directory): GRE goes through the ip table and the firewall, more slowly",
			"      fix: load or build in nft_fwd_netdev (CONFIG_NFT_FWD_NETDEV) (OpenWrt: kmod-nft-netdev), then restart pptp-alg",
			"FAIL  ctnetlink: cannot read the conntrack table: conntrack: dump: operation not supported",
			"      fix: load nf_conntrack_netlink (OpenWrt: kmod-nf-conntrack-netlink)"),
			okLines[4:]...)},
		{"kernel without the table flag owner", func(s *system) {
			s.probe = func() []nat.Finding { return findings(map[string]error{"table owner": unix.EOPNOTSUPP}) }
		}, with(1, "ok    nftables features: nftables, maps with concatenated keys and counters, notrack, nat chains, redirect, fib, tproxy; "+
			"`nft flush ruleset` resets busy control connections taken by the NAT redirect (no table flag owner before Linux 5.12)")},
		{"kernel without nftables", func(s *system) {
			s.ruleset = func() (nat.Ruleset, error) { return nat.Ruleset{}, fmt.Errorf("nat: list tables: %w", unix.EOPNOTSUPP) }
			s.probe = func() []nat.Finding { return findings(map[string]error{"nftables": unix.EOPNOTSUPP}) }
			s.daemon = func(context.Context) (controlapi.Status, error) {
				return controlapi.Status{}, errors.New("connect: no such file or directory")
			}
		}, []string{
			"FAIL  nftables: cannot read the ruleset: nat: list tables: operation not supported",
			"      fix: the kernel needs nf_tables (OpenWrt: kmod-nft-core)",
			"FAIL  nftables features: the kernel lacks nftables (operation not supported)",
			"      fix: load or build in nf_tables (CONFIG_NF_TABLES) (OpenWrt: kmod-nft-core)",
			"FAIL  fast path features: not checked: nftables is missing",
			"      fix: see the nftables features check",
			okLines[3], okLines[4],
			"FAIL  kernel PPTP helper: not checked: the ruleset cannot be read",
			"      fix: see the nftables check",
			"FAIL  forwarded GRE: not checked: the ruleset cannot be read",
			"      fix: see the nftables check",
			"FAIL  daemon: not running: connect: no such file or directory",
			"      fix: start it: pptp-alg run --lan IFACE --wan IFACE (see 'pptp-alg run --help')",
		}},
		{"not root", func(s *system) {
			s.ruleset = func() (nat.Ruleset, error) { return nat.Ruleset{}, eperm }
			s.probe = func() []nat.Finding { return findings(map[string]error{"nftables": eperm}) }
			s.conntrack = func() error { return eperm }
			s.daemon = func(context.Context) (controlapi.Status, error) {
				return controlapi.Status{}, fmt.Errorf("dial: %w", unix.EACCES)
			}
		}, []string{
			"FAIL  nftables: cannot read the ruleset: nat: list tables: operation not permitted",
			"      fix: " + fixRoot,
			"FAIL  nftables features: cannot ask the kernel for nftables (nat: list tables: operation not permitted)",
			"      fix: " + fixRoot,
			"FAIL  fast path features: not checked: nftables is missing",
			"      fix: see the nftables features check",
			"FAIL  ctnetlink: cannot read the conntrack table: nat: list tables: operation not permitted",
			"      fix: " + fixRoot,
			okLines[4],
			"FAIL  kernel PPTP helper: not checked: the ruleset cannot be read",
			"      fix: see the nftables check",
			"FAIL  forwarded GRE: not checked: the ruleset cannot be read",
			"      fix: see the nftables check",
			"FAIL  daemon: cannot ask it: dial: permission denied",
			"      fix: " + fixRoot,
		}},
	} {
		sys := healthy()
		tc.change(&sys)
		var b bytes.Buffer
		allOK := printChecks(&b, diagnose(context.Background(), sys))
		lines := bytes.Split(bytes.TrimSuffix(b.Bytes(), []byte("\n")), []byte("\n"))
		var got []string
		for _, l := range lines[:len(lines)-1] {
			got = append(got, string(l))
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
		passed := 0
		for _, l := range tc.want {
			if l[:2] == "ok" {
				passed++
			}
		}
		total := passed
		for _, l := range tc.want {
			if l[:4] == "FAIL" {
				total++
			}
		}
		if summary := fmt.Sprintf("%d of %d checks passed", passed, total); string(lines[len(lines)-1]) != summary || allOK != (passed == total) {
			t.Errorf("%s: summary %q, all ok %v; want %q", tc.name, lines[len(lines)-1], allOK, summary)
		}
	}
}

// findings is what nat.Probe finds on a kernel that fails the features in
// missing with their errors, and those built on them as not tried.
func findings(missing map[string]error) []nat.Finding {
	fs := make([]nat.Finding, len(nat.Features))
	for i, f := range nat.Features {
		fs[i] = nat.Finding{Feature: f, Err: missing[f.Name]}
	}
	if fs[0].Err != nil {
		for i := range fs[1:] {
			fs[i+1].Err = nat.ErrNotTried
		}
	}
	return fs
}

// TestDiagnoseEndpoints: the checks of the router's own PPTP, client and
// server, come after the others, and only when they have something to say.
func TestDiagnoseEndpoints(t *testing.T) {
	fw4Input := nat.InputChain{BaseChain: nat.BaseChain{Table: "inet fw4", Chain: "input", Hook: "input", Policy: "drop"}}
	withInput := func(in nat.InputChain) func() (nat.Ruleset, error) {
		return func() (nat.Ruleset, error) {
			return nat.Ruleset{Forward: []nat.ForwardChain{fw4Forward}, Input: []nat.InputChain{in}}, nil
		}
	}
	routerCalls := func(on bool) func(context.Context) (controlapi.Status, error) {
		return func(context.Context) (controlapi.Status, error) {
			st := enabledStatus()
			st.RouterCalls = on
			return st, nil
		}
	}
	listeners := func(addrs ...string) func() ([]netip.Addr, error) {
		return func() ([]netip.Addr, error) {
			var out []netip.Addr
			for _, a := range addrs {
				out = append(out, netip.MustParseAddr(a))
			}
			return out, nil
		}
	}
	included := fw4Input
	included.AcceptsUntrackedGRE = true
	allowed := included
	allowed.AcceptsGRE, allowed.AcceptsPPTP = true, true
	for _, tc := range []struct {
		name   string
		change func(*system)
		want   []string // the lines after the GRE fast path's
	}{
		{"router calls not relayed, no server", func(s *system) {}, nil},
		{"router calls relayed, the input include", func(s *system) {
			s.daemon, s.ruleset = routerCalls(true), withInput(included)
		}, []string{"ok    router's own PPTP: relayed with the LAN's, so their call IDs never collide; the input chain accepts their GRE (no Allow-GRE rule needed)"}},
		{"router calls relayed, no input include", func(s *system) {
			s.daemon, s.ruleset = routerCalls(true), withInput(fw4Input)
		}, []string{
			"FAIL  router's own PPTP: relayed, but inet fw4 input does not accept their untracked GRE: the router's own PPTP client gets no GRE back",
			"      fix: install pptp-alg's fw4 include as /usr/share/nftables.d/chain-pre/input/30-pptp-alg.nft and run fw4 reload",
		}},
		{"pptpd on the LAN address only", func(s *system) {
			s.ruleset, s.pptpListeners = withInput(included), listeners("192.168.1.1")
		}, []string{"ok    PPTP server: listens on tcp/1723 of LAN addresses only; pptp-alg does not relay connections to the router"}},
		{"pptpd on every address, no rules", func(s *system) {
			s.ruleset, s.pptpListeners = withInput(included), listeners("0.0.0.0")
		}, []string{
			"FAIL  PPTP server: listens on 0.0.0.0:1723, but inet fw4 input has no rule accepting tcp/1723 and GRE: clients on the WAN cannot connect (pptp-alg leaves this PPTP alone; clients on the LAN may)",
			"      fix: accept tcp/1723 and GRE from the WAN (fw4: two rules, src wan, proto tcp dest_port 1723 and proto gre, target ACCEPT)",
		}},
		{"pptpd on the WAN address, rules", func(s *system) {
			s.ruleset, s.pptpListeners = withInput(allowed), listeners("203.0.113.1")
		}, []string{"ok    PPTP server: listens on 203.0.113.1:1723; the input chain accepts tcp/1723 and GRE; pptp-alg leaves this PPTP alone"}},
	} {
		sys := healthy()
		tc.change(&sys)
		var b bytes.Buffer
		printChecks(&b, diagnose(context.Background(), sys))
		lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
		i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "GRE fast path:") })
		if i < 0 {
			t.Fatalf("%s: no fast path line in\n%s", tc.name, b.String())
		}
		got := lines[i+1 : len(lines)-1] // the last is the count
		if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestTCPListeners(t *testing.T) {
	// /proc/net/tcp of a little-endian host: pptpd on 0.0.0.0:1723 and on
	// 192.168.1.1:1723, a connection from port 1723, sshd.
	text := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:06BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0101A8C0:06BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0101A8C0:06BB 0B01A8C0:C350 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
`
	got := tcpListeners(text, 1723)
	want := []netip.Addr{netip.IPv4Unspecified(), netip.MustParseAddr("192.168.1.1")}
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 { // big-endian: the kernel prints the bytes in order
		want[1] = netip.MustParseAddr("1.1.168.192")
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("tcpListeners (-want +got):\n%s", diff)
	}
}
