package nat

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// inspectRuleset is a firewall with the kernel PPTP helper assigned three
// ways (after the redirect as fw4 does it, before it, and from no base
// chain), an FTP helper that must not count, and three forward chains: one
// accepting untracked GRE through a jump, one accepting only established
// GRE, one with policy accept.
const inspectRuleset = `
table inet fw {
	ct helper pptp_h { type "pptp" protocol tcp; }
	ct helper ftp_h { type "ftp" protocol tcp; }
	chain prerouting { type filter hook prerouting priority filter; policy accept; iifname "lan0" jump helper_lan; }
	chain helper_lan { tcp dport 1723 ct helper set "pptp_h"; tcp dport 21 ct helper set "ftp_h"; }
	chain mangle { type filter hook prerouting priority mangle; policy accept; tcp dport 1723 ct helper set "pptp_h"; }
	chain forward { type filter hook forward priority filter; policy drop; jump forward_pre; }
	chain forward_pre { meta l4proto gre ct state untracked counter accept; }
	chain unreached { ct helper set "pptp_h"; }
	chain input { type filter hook input priority filter; policy drop; iifname "wan0" jump input_wan; }
	chain input_wan { meta l4proto gre ct state untracked accept; tcp dport 1723 counter accept; meta l4proto gre counter accept; }
}
table ip other {
	chain filter_forward { type filter hook forward priority 10; policy drop; ip protocol gre ct state established accept; }
	chain filter_input { type filter hook input priority 10; policy drop; ip protocol gre ct state established accept; tcp dport 1724 accept; udp dport 1723 accept; }
}
table ip open {
	chain filter_forward { type filter hook forward priority 20; policy accept; }
}
`

func TestInspectRuleset(t *testing.T) {
	requireKernel(t)
	requireNft(t)
	ns := newNetNS(t, "inspect")

	empty, err := InspectRuleset(nftables.WithNetNSFd(ns.fd))
	if err != nil || len(empty.PPTPHelper) != 0 || len(empty.Forward) != 0 || len(empty.Input) != 0 {
		t.Fatalf("empty ruleset: %+v, %v; want nothing", empty, err)
	}

	file := filepath.Join(t.TempDir(), "ruleset.nft")
	if err := os.WriteFile(file, []byte(inspectRuleset), 0o644); err != nil {
		t.Fatal(err)
	}
	ns.exec(t, "nft", "-f", file)
	// pptp-alg's own table must not disturb the findings.
	p, err := Open(Config{LAN: []string{"lan0"}, WAN: "wan0", WANAddr: wanAddr, RelayPort: relayPort}, nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	got, err := InspectRuleset(nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	sortRuleset(&got)
	pre := BaseChain{Table: "inet fw", Chain: "prerouting", Hook: "prerouting", Priority: 0, Policy: "accept"}
	mangle := BaseChain{Table: "inet fw", Chain: "mangle", Hook: "prerouting", Priority: -150, Policy: "accept"}
	want := Ruleset{
		PPTPHelper: []HelperRule{
			{Table: "inet fw", Chain: "helper_lan", From: []BaseChain{pre}},
			{Table: "inet fw", Chain: "mangle", From: []BaseChain{mangle}},
			{Table: "inet fw", Chain: "unreached"},
		},
		Forward: []ForwardChain{
			{BaseChain{Table: "inet fw", Chain: "forward", Hook: "forward", Priority: 0, Policy: "drop"}, true},
			{BaseChain{Table: "ip open", Chain: "filter_forward", Hook: "forward", Priority: 20, Policy: "accept"}, false},
			{BaseChain{Table: "ip other", Chain: "filter_forward", Hook: "forward", Priority: 10, Policy: "drop"}, false},
		},
		Input: []InputChain{
			{BaseChain{Table: "inet fw", Chain: "input", Hook: "input", Priority: 0, Policy: "drop"}, true, true, true},
			{BaseChain{Table: "ip other", Chain: "filter_input", Hook: "input", Priority: 10, Policy: "drop"}, false, false, false},
			{BaseChain{Table: "ip pptp_alg", Chain: "relay_input", Hook: "input", Priority: -5, Policy: "accept"}, false, false, false},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("InspectRuleset (-want +got):\n%s", diff)
	}
	sees := map[string]bool{}
	for _, h := range got.PPTPHelper {
		sees[h.Chain] = h.SeesRelayedConnections(false)
	}
	if diff := cmp.Diff(map[string]bool{"helper_lan": false, "mangle": false, "unreached": true}, sees); diff != "" {
		t.Errorf("SeesRelayedConnections (-want +got):\n%s", diff)
	}
}

func sortRuleset(rs *Ruleset) {
	slices.SortFunc(rs.PPTPHelper, func(a, b HelperRule) int {
		return strings.Compare(a.Table+" "+a.Chain, b.Table+" "+b.Chain)
	})
	slices.SortFunc(rs.Forward, func(a, b ForwardChain) int {
		return strings.Compare(a.Table+" "+a.Chain, b.Table+" "+b.Chain)
	})
	slices.SortFunc(rs.Input, func(a, b InputChain) int {
		return strings.Compare(a.Table+" "+a.Chain, b.Table+" "+b.Chain)
	})
}

func TestSeesRelayedConnections(t *testing.T) {
	for _, tc := range []struct {
		hook         string
		prio         int32
		want         bool // LAN control connections by tproxy
		wantRedirect bool // by the NAT redirect
	}{
		{"prerouting", -350, false, true}, // before relay_prerouting: no conntrack entry yet either
		{"prerouting", -150, false, true}, // mangle: untracked by tproxy, still tcp/1723 before the redirect
		{"prerouting", -105, false, true}, // the redirect's own priority: which runs first is not known
		{"prerouting", -104, false, false},
		{"prerouting", 0, false, false}, // fw4's helper_lan
		{"input", 0, true, true},
		{"output", 0, true, true},
		{"forward", 0, false, false},
		{"postrouting", 100, false, false},
	} {
		b := BaseChain{Hook: tc.hook, Priority: tc.prio}
		if got := b.SeesRelayedConnections(false); got != tc.want {
			t.Errorf("%s priority %d: SeesRelayedConnections(false) = %v, want %v", tc.hook, tc.prio, got, tc.want)
		}
		if got := b.SeesRelayedConnections(true); got != tc.wantRedirect {
			t.Errorf("%s priority %d: SeesRelayedConnections(true) = %v, want %v", tc.hook, tc.prio, got, tc.wantRedirect)
		}
	}
}

func TestXTCTHelper(t *testing.T) {
	info := func(helper string) *xt.Unknown {
		b := make([]byte, 12+16+8) // revision 0 with its pointer
		copy(b[12:], helper)
		u := xt.Unknown(b)
		return &u
	}
	short := xt.Unknown(make([]byte, 20))
	for _, tc := range []struct {
		name string
		e    *expr.Target
		want bool
	}{
		{"CT --helper pptp", &expr.Target{Name: "CT", Info: info("pptp")}, true},
		{"CT --helper ftp", &expr.Target{Name: "CT", Info: info("ftp")}, false},
		{"CT --helper pptpx", &expr.Target{Name: "CT", Info: info("pptpx")}, false},
		{"CT --notrack", &expr.Target{Name: "CT", Info: info("")}, false},
		{"truncated info", &expr.Target{Name: "CT", Info: &short}, false},
		{"another target", &expr.Target{Name: "MARK", Info: info("pptp")}, false},
	} {
		r := &nftables.Rule{Exprs: []expr.Any{tc.e}}
		if got := setsPPTPHelper(r, nil); got != tc.want {
			t.Errorf("%s: setsPPTPHelper = %v, want %v", tc.name, got, tc.want)
		}
	}
}
