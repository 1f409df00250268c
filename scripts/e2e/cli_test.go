package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

// cli runs `pptp-alg CMD --socket S ARGS...` in the router and returns its
// stdout and exit status; stderr goes into the error.
func (r *router) cli(t *testing.T, cmd string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	argv := append([]string{cmd, "--socket", r.socket}, args...)
	c := r.Command(ctx, r.Router, algBin, argv...)
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		if stderr.Len() > 0 {
			t.Logf("pptp-alg %s: stderr: %s", cmd, strings.TrimSpace(stderr.String()))
		}
		return string(out), ee.ExitCode()
	}
	t.Fatalf("pptp-alg %s: %v", cmd, err)
	return "", 0
}

// mustCLI is cli that wants exit status 0.
func (r *router) mustCLI(t *testing.T, cmd string, args ...string) string {
	t.Helper()
	out, code := r.cli(t, cmd, args...)
	if code != 0 {
		t.Fatalf("pptp-alg %s %v: exit %d\n%s", cmd, args, code, out)
	}
	return out
}

func (r *router) status(t *testing.T) controlapi.Status {
	t.Helper()
	out := r.mustCLI(t, "status", "--json")
	var st controlapi.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

func (r *router) tableExists(t *testing.T) bool {
	t.Helper()
	_, err := r.Run(context.Background(), r.Router, "nft", "list", "table", "ip", "pptp_alg")
	return err == nil
}

// relayedSoFar counts the control connections the daemon has relayed.
func (r *router) relayedSoFar() int {
	return strings.Count(r.daemon.Output(), `msg="control connection open"`)
}

// TestStatusDisableEnable: status reports the daemon; disable removes every
// rule it owns and PPTP falls back to the firewall, which under fw4 carries
// no tunnel; enable brings it all back, with no restart.
func TestStatusDisableEnable(t *testing.T) {
	r := newRouter(t, 2, lab.FirewallFW4)
	srv := r.startSimServer(t, "--early-gre")
	held := r.holdSim(t, r.Hosts[0], "--call-ids", "5,6", "--pings", "2")

	st := r.status(t)
	t.Logf("status:\n%s", r.mustCLI(t, "status"))
	if !st.Enabled || strings.Join(st.LAN, ",") != lab.RouterLAN || st.WAN != lab.RouterWAN ||
		st.WANAddr != r.WANAddr.String() || st.RelayPort != 1724 || st.Table != "pptp_alg" ||
		st.ControlConnections != 1 || st.Calls != 2 || st.Version == "" {
		t.Errorf("status with one held connection of two calls: %+v", st)
	}
	for _, f := range []string{"nftables", "maps with concatenated keys and counters", "notrack", "nat chains", "redirect", "fib", "tproxy", "netdev family", "fwd", "table owner", "ctnetlink"} {
		if !strings.Contains(strings.Join(st.KernelFeatures, ","), f) {
			t.Errorf("kernel_features %q lacks %q", st.KernelFeatures, f)
		}
	}
	if len(st.KernelPPTPHelper) != 0 || st.RulesetError != "" {
		t.Errorf("under fw4 without the helper: kernel_pptp_helper %+v, ruleset_error %q", st.KernelPPTPHelper, st.RulesetError)
	}
	if out, code := r.cli(t, "doctor"); code != 0 || strings.Contains(out, "FAIL") {
		t.Errorf("doctor on a working router: exit %d\n%s", code, out)
	} else {
		t.Logf("doctor:\n%s", out)
	}

	start := time.Now()
	out := r.mustCLI(t, "disable")
	t.Logf("disable took %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	if !strings.Contains(out, "disabled") || !strings.Contains(out, "2 calls released") {
		t.Errorf("disable said %q", out)
	}
	if r.tableExists(t) {
		t.Errorf("table ip pptp_alg still there after disable")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := held.p.Wait(ctx); err == nil || !strings.Contains(held.p.Output(), `"how":"peer"`) {
		t.Errorf("held calls after disable: %v; want the relay to have closed the connection:\n%s", err, held.p.Output())
	}
	st = r.status(t)
	if st.Enabled || st.Calls != 0 || st.ControlConnections != 0 || st.WANAddr != "" {
		t.Errorf("status after disable: %+v", st)
	}
	if ms := r.mappings(t); len(ms) != 0 {
		t.Errorf("mappings after disable: %+v", ms)
	}
	if out := r.mustCLI(t, "disable"); !strings.Contains(out, "already disabled") {
		t.Errorf("second disable said %q", out)
	}
	out, code := r.cli(t, "doctor")
	if code != 1 || !strings.Contains(out, "FAIL  daemon: running but disabled") || !strings.Contains(out, "fix: pptp-alg enable") {
		t.Errorf("doctor while disabled: exit %d\n%s", code, out)
	}

	// Fallback: the control connection goes straight to the server,
	// masqueraded by fw4, and the server's GRE finds nothing to carry it.
	relayed := r.relayedSoFar()
	lines, err := r.sim(t, r.Hosts[1], "--call-ids", "7", "--pings", "2", "--wait", "500ms")
	calls := events(lines, "call")
	if err == nil || len(calls) != 1 || calls[0]["peer_call_id_ok"] != true || calls[0]["echoed"] != 0.0 {
		t.Errorf("call while disabled: %v, %v; want the call connected by the server and no GRE echoed", err, calls)
	}
	if n := r.relayedSoFar(); n != relayed {
		t.Errorf("the daemon relayed %d connections while disabled", n-relayed)
	}
	if seen := events(jsonLines(srv.Output()), "call"); len(seen) == 0 || seen[len(seen)-1]["peer_call_id"] != 7.0 {
		t.Errorf("the server did not see call ID 7 untranslated: %v", seen)
	}

	start = time.Now()
	out = r.mustCLI(t, "enable")
	t.Logf("enable took %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	if !strings.Contains(out, "enabled") || !r.tableExists(t) {
		t.Errorf("enable said %q; table there: %v", out, r.tableExists(t))
	}
	if out := r.mustCLI(t, "enable"); !strings.Contains(out, "already enabled") {
		t.Errorf("second enable said %q", out)
	}
	lines, err = r.sim(t, r.Hosts[1], "--call-ids", "7", "--pings", "2")
	if err != nil {
		t.Errorf("call after enable: %v", err)
	}
	checkCalls(t, "after enable", lines, 1)
	if r.relayedSoFar() != relayed+1 {
		t.Errorf("the call after enable was not relayed")
	}
	if st := r.status(t); !st.Enabled || st.WANAddr != r.WANAddr.String() {
		t.Errorf("status after enable: %+v", st)
	}
	for line := range strings.Lines(r.daemon.Output()) {
		if strings.Contains(line, "by request") {
			t.Logf("daemon: %s", strings.TrimSpace(line))
		}
	}
}

// helperWarning is the daemon's start-up line about fw4's helper.
var helperWarning = regexp.MustCompile(`level=WARN msg="the kernel PPTP helper is assigned" where="inet fw4 chain helper_lan \(prerouting priority 0\)" effect="[^"]+" fix="[^"]*kmod-nf-nathelper-extra[^"]*"`)

// TestKernelHelperCoexistence: fw4 assigns the kernel's PPTP helper to LAN
// tcp/1723 in its prerouting chain at priority filter. Measured here, with
// --lan-control tproxy: the relayed connection, which the daemon's tproxy
// rule leaves untracked at priority raw, never gets the helper, so tunnels
// work; the daemon warns at
// start-up, status and doctor report the assignment with its fix. A helper
// assigned earlier in prerouting (mangle) cannot land on it either.
func TestKernelHelperCoexistence(t *testing.T) {
	r := newRouter(t, 2, lab.FirewallFW4AndHelper, "--lan-control", "tproxy")
	if !helperWarning.MatchString(r.daemon.Output()) {
		t.Errorf("no start-up warning about the kernel helper:\n%s", r.daemon.Output())
	}
	st := r.status(t)
	if len(st.KernelPPTPHelper) != 1 || st.KernelPPTPHelper[0].SeesRelayedConnections ||
		!strings.Contains(st.KernelPPTPHelper[0].Where, "inet fw4 chain helper_lan") {
		t.Errorf("status kernel_pptp_helper: %+v", st.KernelPPTPHelper)
	}
	t.Logf("status:\n%s", r.mustCLI(t, "status"))
	out, code := r.cli(t, "doctor")
	t.Logf("doctor:\n%s", out)
	if code != 1 || !strings.Contains(out, "FAIL  kernel PPTP helper: assigned in inet fw4 chain helper_lan") ||
		!strings.Contains(out, "fix: fw4 assigns it to zone lan: remove kmod-nf-nathelper-extra") {
		t.Errorf("doctor under fw4 with the helper: exit %d", code)
	}
	if n := strings.Count(out, "FAIL"); n != 1 {
		t.Errorf("doctor: %d failures, want only the helper's", n)
	}

	t.Run("tunnels work", func(t *testing.T) {
		r.startSimServer(t, "--early-gre")
		held := r.holdSim(t, r.Hosts[0], "--call-ids", "3", "--pings", "3")
		ct, err := r.Run(context.Background(), r.Router, "conntrack", "-L", "-p", "tcp", "--orig-port-dst", "1723")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("conntrack, tcp/1723:\n%s", ct)
		// The relay's own connection to the server is tracked; the
		// client's, taken to the relay by tproxy, is not.
		if !strings.Contains(ct, "src="+r.WANAddr.String()) || strings.Contains(ct, "src="+r.Hosts[0].Addr.String()) || strings.Contains(ct, "helper=") {
			t.Errorf("want only the relay's connection to the server, untranslated and without a helper")
		}
		held.release(t)
		checkCalls(t, "sim", jsonLines(held.p.Output()), 1)
		r.waitEmpty(t, "the simulator closed")
	})

	t.Run("helper at mangle", func(t *testing.T) {
		// A table of the operator's own, assigning the helper at priority
		// mangle (-150), on the original tcp/1723: still after
		// relay_prerouting (raw), so the relayed connection is untracked
		// and the helper cannot land on it.
		file := filepath.Join(r.Dir, "early-helper.nft")
		ruleset := "table ip early_helper {\n" +
			"\tct helper pptp { type \"pptp\" protocol tcp; }\n" +
			"\tchain pre { type filter hook prerouting priority mangle; policy accept; tcp dport 1723 ct helper set \"pptp\"; }\n}\n"
		if err := os.WriteFile(file, []byte(ruleset), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Run(context.Background(), r.Router, "nft", "-f", file); err != nil {
			t.Fatal(err)
		}
		defer r.Run(context.Background(), r.Router, "nft", "delete", "table", "ip", "early_helper")

		r.startSimServer(t, "--early-gre")
		lines, err := r.sim(t, r.Hosts[0], "--call-ids", "4", "--pings", "1", "--then", "clear")
		if err != nil {
			t.Fatalf("a call with the helper assigned at mangle: %v\n%v", err, lines)
		}
		checkCalls(t, "a call with the helper assigned at mangle", lines, 1)
		if strings.Contains(r.daemon.Output(), "control connection refused") {
			t.Errorf("the daemon refused a connection:\n%s", r.daemon.Output())
		}
		sees := map[string]bool{}
		for _, h := range r.status(t).KernelPPTPHelper {
			sees[h.Where] = h.SeesRelayedConnections
		}
		want := map[string]bool{
			"inet fw4 chain helper_lan (prerouting priority 0)":    false,
			"ip early_helper chain pre (prerouting priority -150)": false,
		}
		if fmt.Sprint(sees) != fmt.Sprint(want) {
			t.Errorf("status kernel_pptp_helper: %v, want %v", sees, want)
		}
	})

	t.Run("real peers", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.StartPPTPD(ctx); err != nil {
			t.Fatal(err)
		}
		c, err := r.StartPPTPClient(r.Hosts[1])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.WaitUp(ctx); err != nil {
			t.Fatalf("tunnel not up: %v", err)
		}
		if n, err := c.Echo(ctx, 20); n != 20 {
			t.Errorf("%d of 20 PPP frames came back: %v", n, err)
		}
		if ms := r.mappings(t); len(ms) != 1 || !ms[0].Established {
			t.Errorf("mappings: %+v", ms)
		}
	})
}

// TestHelperTunnelAtEnable: while pptp-alg is disabled the kernel helper
// carries PPTP under fw4; that tunnel keeps carrying GRE after enable, since
// pptp-alg owns only the calls it relays (issue 10; before, enable dropped
// its GRE).
func TestHelperTunnelAtEnable(t *testing.T) {
	r := newRouter(t, 1, lab.FirewallFW4AndHelper)
	r.mustCLI(t, "disable")
	r.startSimServer(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	p, err := r.Start("pptpsim-held", r.Hosts[0].NS, pr,
		simBin, "client", "--server", r.ServerAddr.String(), "--call-ids", "9", "--pings", "3", "--wait", "1s", "--then", "hold")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rounds := func() []map[string]any { return events(jsonLines(p.Output()), "done") }
	if err := p.WaitFor(ctx, "first round", func() bool { return len(rounds()) == 1 }); err != nil {
		t.Fatal(err)
	}
	if rounds()[0]["ok"] != true {
		t.Fatalf("through the kernel helper, with pptp-alg disabled: %v", rounds())
	}
	r.mustCLI(t, "enable")
	fmt.Fprintln(pw, "ping")
	if err := p.WaitFor(ctx, "second round", func() bool { return len(rounds()) == 2 }); err != nil {
		t.Fatal(err)
	}
	t.Logf("helper-carried call, before and after enable: %v", rounds())
	if rounds()[1]["ok"] != true {
		t.Errorf("the helper's tunnel lost its GRE when pptp-alg was enabled")
	}
	if n := len(r.mappings(t)); n != 0 {
		t.Errorf("pptp-alg lists %d calls; the helper's is none of its own", n)
	}
}

// TestDrop: `pptp-alg drop` ends one call, by its server and NAT call ID:
// its control connection closes on both sides, its kernel elements go,
// other clients' calls stay, and the client can dial again.
func TestDrop(t *testing.T) {
	r := newRouter(t, 2, lab.FirewallFW4)
	r.startSimServer(t, "--early-gre")
	keep := r.holdSim(t, r.Hosts[0], "--call-ids", "7", "--pings", "2")
	victim := r.holdSim(t, r.Hosts[1], "--call-ids", "7", "--pings", "2")
	ms := r.mappings(t)
	if len(ms) != 2 {
		t.Fatalf("daemon lists %d calls, want 2: %+v", len(ms), ms)
	}
	var drop, stay controlapi.Mapping
	for _, m := range ms {
		if m.Client == r.Hosts[1].Addr.String() {
			drop = m
		} else {
			stay = m
		}
	}
	if drop.Client == "" {
		t.Fatalf("no call of %s in %+v", r.Hosts[1].Addr, ms)
	}
	elements := func() string {
		return r.nft(t, "list", "map", "ip", "pptp_alg", "gre_in")
	}
	key := fmt.Sprintf("%s . %d", drop.Server, drop.NATCallID)
	if !strings.Contains(elements(), key) {
		t.Fatalf("gre_in lacks %s before the drop:\n%s", key, elements())
	}

	out := r.mustCLI(t, "drop", "--server", drop.Server, "--nat-call-id", strconv.Itoa(drop.NATCallID))
	want := fmt.Sprintf("pptp-alg: dropped the call of %s (call ID 7) to %s (server call ID %d, NAT call ID %d); its control connection is closed\n",
		drop.Client, drop.Server, drop.ServerCallID, drop.NATCallID)
	if out != want {
		t.Errorf("drop printed %q, want %q", out, want)
	}
	if ms := r.mappings(t); len(ms) != 1 || ms[0].Client != stay.Client || ms[0].NATCallID != stay.NATCallID {
		t.Errorf("after the drop, calls %+v; want only %+v", ms, stay)
	}
	if strings.Contains(elements(), key) {
		t.Errorf("gre_in still holds %s after the drop:\n%s", key, elements())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := victim.p.WaitFor(ctx, "the dropped client told", func() bool {
		return len(events(jsonLines(victim.p.Output()), "closed")) > 0 || victim.p.Exited()
	}); err != nil {
		t.Errorf("the dropped call's client: %v\n%s", err, victim.p.Output())
	}
	r.waitLog(t, regexp.MustCompile(`msg="call dropped by request" client=`+regexp.QuoteMeta(drop.Client)))

	// The same call again, and one that never was: exit 1, saying so.
	for _, id := range []int{drop.NATCallID, 65000} {
		out, code := r.cli(t, "drop", "--server", drop.Server, "--nat-call-id", strconv.Itoa(id))
		if code != 1 || out != "" {
			t.Errorf("drop of no call (NAT call ID %d): exit %d, stdout %q; want 1 and nothing", id, code, out)
		}
	}

	// The kept call still carries GRE, and the dropped client dials again.
	if keep.p.Exited() {
		t.Errorf("the other client's held call ended:\n%s", keep.p.Output())
	}
	lines, err := r.sim(t, r.Hosts[1], "--calls", "1", "--pings", "3", "--then", "clear")
	if err != nil {
		t.Fatalf("dialing again after the drop: %v", err)
	}
	checkCalls(t, "dialing again after the drop", lines, 1)
}
