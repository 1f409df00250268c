package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

// TestLANComesAndGoes: a LAN interface absent at start, then created and
// deleted (a guest bridge whose network goes up and down), neither stops
// the daemon nor drops the calls of the other LAN, and new tunnels work
// throughout.
func TestLANComesAndGoes(t *testing.T) {
	const guest = "rguest0"
	r := newRouter(t, 2, lab.FirewallFW4, "--lan", lab.RouterLAN+","+guest)
	r.waitLog(t, regexp.MustCompile(`level=WARN msg="LAN interface not found; serving it when it appears" lan=`+guest))
	r.startSimServer(t, "--early-gre")
	r.holdSim(t, r.Hosts[0], "--call-ids", "7", "--pings", "2")
	held := r.mappings(t)
	if len(held) != 1 {
		t.Fatalf("daemon lists %d calls, want the 1 held: %+v", len(held), held)
	}

	rebuilt := regexp.MustCompile(`msg="GRE fast path rebuilt"`)
	rebuilds := func() int {
		n := 0
		for line := range strings.Lines(r.daemon.Output()) {
			if rebuilt.MatchString(line) {
				n++
			}
		}
		return n
	}
	waitRebuilds := func(n int, after string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for rebuilds() < n {
			if time.Now().After(deadline) {
				t.Fatalf("no fast path rebuild within 10 s of %s; log:\n%s", after, r.daemon.Output())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ctx := context.Background()
	before := rebuilds()
	for i, step := range [][]string{
		{"ip", "link", "add", guest, "type", "bridge"},
		{"ip", "link", "del", guest},
	} {
		if _, err := r.Run(ctx, r.Router, step[0], step[1:]...); err != nil {
			t.Fatal(err)
		}
		waitRebuilds(before+i+1, strings.Join(step, " "))
		if st := r.status(t); !st.Enabled || !st.FastPath {
			t.Errorf("after %v: status enabled %v, fast path %v (%s)", step, st.Enabled, st.FastPath, st.FastPathOff)
		}
		ms := r.mappings(t)
		if len(ms) != 1 || ms[0].NATCallID != held[0].NATCallID || !ms[0].Since.Equal(held[0].Since) {
			t.Errorf("after %v: calls %+v, want the held call %+v", step, ms, held)
		}
		lines, err := r.sim(t, r.Hosts[1], "--calls", "1", "--pings", "3", "--then", "clear")
		if err != nil {
			t.Fatalf("a new tunnel after %v: %v", step, err)
		}
		checkCalls(t, "a new tunnel after "+strings.Join(step, " "), lines, 1)
	}
	if r.daemon.Exited() {
		t.Fatalf("the daemon exited:\n%s", r.daemon.Output())
	}
}

// TestGuestInputReject: a LAN zone that rejects input (a guest network)
// still carries tunnels, because the package's input include accepts the
// control connections redirected to the relay; without that rule they are
// rejected.
func TestGuestInputReject(t *testing.T) {
	r := newRouter(t, 1, lab.FirewallFW4, "--lan-control", "tproxy") // the rule under test is tproxy's
	r.nft(t, "insert", "rule", "inet", "fw4", "input_lan", "reject", "comment", `"test: a guest zone with input REJECT"`)
	r.startSimServer(t, "--early-gre")
	lines, err := r.sim(t, r.Hosts[0], "--calls", "1", "--pings", "3", "--then", "clear")
	if err != nil {
		t.Fatalf("a tunnel from a LAN whose zone rejects input: %v\n%v", err, lines)
	}
	checkCalls(t, "a tunnel from a LAN whose zone rejects input", lines, 1)

	// Without the include's rule the same tunnel is refused.
	var handle string
	for line := range strings.Lines(r.nft(t, "-a", "list", "chain", "inet", "fw4", "input")) {
		if strings.Contains(line, "pptp-alg: PPTP control connections taken to its relay by tproxy") {
			_, handle, _ = strings.Cut(strings.TrimSpace(line), "# handle ")
		}
	}
	if handle == "" {
		t.Fatalf("fw4's input chain lacks the include's rule:\n%s", r.nft(t, "list", "chain", "inet", "fw4", "input"))
	}
	r.nft(t, "delete", "rule", "inet", "fw4", "input", "handle", handle)
	if lines, err := r.sim(t, r.Hosts[0], "--calls", "1", "--pings", "1", "--then", "clear"); err == nil {
		t.Errorf("without the include's rule the tunnel still worked: %v", lines)
	}
}

// TestBridgeNetfilter: with br_netfilter passing bridged frames through the
// IP hooks (bridge-nf-call-iptables=1, which OpenWrt does not do), tproxy's
// socket would be lost before the LAN's packets reach the relay, so the
// daemon takes the bridged LAN's control connections by the NAT redirect
// instead: chosen at enable, said in the log and status, and a tunnel
// works. With the setting back at 0, the next link event brings tproxy
// back, and a tunnel works again. The LAN's zone rejects input, as a guest
// zone does: the firewall include accepts both. (All with --lan-control
// tproxy; the default is the redirect whatever the bridge does.)
func TestBridgeNetfilter(t *testing.T) {
	r := newRouter(t, 1, lab.FirewallFW4, "--lan-control", "tproxy")
	set := func(v string) {
		t.Helper()
		if _, err := r.Run(context.Background(), r.Router, "sysctl", "-w", "net.bridge.bridge-nf-call-iptables="+v); err != nil {
			t.Skipf("no br_netfilter here: %v", err)
		}
	}
	if got := r.status(t).LANControl; got != "tproxy" {
		t.Fatalf("status lan_control %q with bridge-nf-call-iptables=0, want tproxy", got)
	}
	// A guest zone: the include's rules must accept both ways in.
	r.nft(t, "insert", "rule", "inet", "fw4", "input_lan", "reject", "comment", `"test: a guest zone with input REJECT"`)
	set("1")
	r.mustCLI(t, "disable")
	r.mustCLI(t, "enable")
	// With owned tables a flush resets none, and the warning says no more.
	r.waitLog(t, regexp.MustCompile("level=WARN msg=\"bridge-nf-call-iptables=1: LAN control connections by NAT redirect\" "+
		"bridge=br-lan fix=\"sysctl -w net\\.bridge\\.bridge-nf-call-iptables=0"))
	if got := r.status(t).LANControl; got != "redirect" {
		t.Fatalf("status lan_control %q with bridge-nf-call-iptables=1, want redirect", got)
	}
	r.startSimServer(t, "--early-gre")
	lines, err := r.sim(t, r.Hosts[0], "--calls", "1", "--pings", "1", "--then", "clear")
	if err != nil {
		t.Fatalf("with bridge-nf-call-iptables=1 (redirect): %v\n%v", err, lines)
	}
	checkCalls(t, "with bridge-nf-call-iptables=1 (redirect)", lines, 1)

	// A sysctl change sends no event; a route added and deleted does.
	set("0")
	for _, op := range []string{"add", "del"} {
		if _, err := r.Run(context.Background(), r.Router, "ip", "route", op, "blackhole", "192.0.2.0/24"); err != nil {
			t.Fatalf("ip route %s: %v", op, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.status(t).LANControl != "tproxy" {
		if time.Now().After(deadline) {
			t.Fatalf("status lan_control %q 5 s after a link event with bridge-nf-call-iptables=0, want tproxy; log:\n%s",
				r.status(t).LANControl, r.daemon.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	lines, err = r.sim(t, r.Hosts[0], "--calls", "1", "--pings", "1", "--then", "clear")
	if err != nil {
		t.Fatalf("with bridge-nf-call-iptables=0 (tproxy): %v\n%v", err, lines)
	}
	checkCalls(t, "with bridge-nf-call-iptables=0 (tproxy)", lines, 1)
}
