// Package e2e runs pptp-alg for real: network namespaces with LAN hosts, a
// router running the daemon under a ruleset modelled on OpenWrt fw4 with the
// project's fw4 includes, and a server; real pptpd and pptp-linux, and the
// project's own PPTP peer simulator for what they cannot do.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

var (
	tools   *lab.Tools
	algBin  string // pptp-alg
	simBin  string // pptpsim
	skipWhy string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if err := lab.Supported(); err != nil {
		skipWhy = err.Error()
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "pptp-alg-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	if tools, err = lab.BuildTools(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	root, err := lab.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	algBin, simBin = filepath.Join(dir, "pptp-alg"), filepath.Join(dir, "pptpsim")
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/pptp-alg", "./scripts/pptpsim")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// router is a lab whose router runs the real daemon.
type router struct {
	*lab.Lab
	daemon *lab.Process
	socket string
	// Stand-ins for the rpcd plugin's init script and logread
	// (fakeInitAndLogread); "" until made.
	fakeInit, fakeLogread string
}

func newRouter(t *testing.T, hosts int, fw lab.Firewall, daemonArgs ...string) *router {
	t.Helper()
	return newRouterWith(t, lab.Options{Hosts: hosts, Firewall: fw}, true, daemonArgs...)
}

// newRouterWith builds a lab from opt; with alg false the router runs no
// daemon: the baseline of a router without pptp-alg.
func newRouterWith(t *testing.T, opt lab.Options, alg bool, daemonArgs ...string) *router {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opt.Prefix, opt.Tools = "pae", tools
	l, err := lab.New(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	r := &router{Lab: l, socket: filepath.Join(l.Dir, "pptp-alg.sock")}
	if !alg {
		return r
	}
	args := append([]string{algBin, "run", "--lan", lab.RouterLAN, "--wan", lab.RouterWAN, "--socket", r.socket}, daemonArgs...)
	r.daemon, err = l.Start("pptp-alg", l.Router, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Runs before the lab's Close: the daemon must exit 0 and leave
		// no table behind.
		if err := r.daemon.Stop(); err != nil {
			t.Errorf("daemon: %v", err)
		}
		out, err := l.Run(context.Background(), l.Router, "nft", "list", "tables")
		if err != nil || strings.Contains(out, "pptp_alg") {
			t.Errorf("after SIGTERM: nft list tables = %q, %v; want no pptp_alg", out, err)
		}
		if t.Failed() {
			t.Logf("daemon output:\n%s", r.daemon.Output())
		}
	})
	if err := r.daemon.WaitFor(ctx, "control socket", func() bool {
		_, err := os.Stat(r.socket)
		return err == nil
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *router) mappings(t *testing.T) []controlapi.Mapping {
	t.Helper()
	out, err := r.Run(context.Background(), r.Router, algBin, "mappings", "--json", "--socket", r.socket)
	if err != nil {
		t.Fatalf("mappings --json: %v", err)
	}
	var ms []controlapi.Mapping
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatalf("mappings --json: %v\n%s", err, out)
	}
	return ms
}

// table is the operator's view, for the test log.
func (r *router) table(t *testing.T) string {
	t.Helper()
	out, err := r.Run(context.Background(), r.Router, algBin, "mappings", "--socket", r.socket)
	if err != nil {
		t.Fatalf("mappings: %v", err)
	}
	return out
}

// waitEmpty checks every call is gone within 2 s, as the daemon promises.
func (r *router) waitEmpty(t *testing.T, after string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		ms := r.mappings(t)
		if len(ms) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls still listed 2 s after %s: %+v", len(ms), after, ms)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRealPeers: real pptp-linux clients on every LAN host hold tunnels to
// one real pptpd at the same time, through the daemon under fw4.
func TestRealPeers(t *testing.T) {
	r := newRouter(t, 3, lab.FirewallFW4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := r.StartPPTPD(ctx); err != nil {
		t.Fatal(err)
	}
	var clients []*lab.Client
	for _, h := range r.Hosts {
		c, err := r.StartPPTPClient(h)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for _, c := range clients {
		if d, err := c.WaitUp(ctx); err != nil {
			t.Fatalf("%s: tunnel not up: %v", c.Host.Name, err)
		} else {
			t.Logf("%s: tunnel up after %v", c.Host.Name, d.Round(time.Millisecond))
		}
	}
	const frames = 50
	for _, c := range clients {
		n, err := c.Echo(ctx, frames)
		if err != nil || n != frames {
			t.Fatalf("%s: %d of %d PPP frames came back: %v", c.Host.Name, n, frames, err)
		}
	}

	ms := r.mappings(t)
	t.Logf("mapping table with every tunnel up:\n%s", r.table(t))
	if len(ms) != len(r.Hosts) {
		t.Fatalf("%d mappings, want %d: %+v", len(ms), len(r.Hosts), ms)
	}
	seen := map[string]bool{}
	nat := map[int]bool{}
	for _, m := range ms {
		seen[m.Client] = true
		nat[m.NATCallID] = true
		if m.Server != r.ServerAddr.String() || !m.Established {
			t.Errorf("mapping %+v: want an established call to %v", m, r.ServerAddr)
		}
		if m.PacketsIn < frames || m.PacketsOut < frames || m.BytesIn == 0 || m.BytesOut == 0 {
			t.Errorf("mapping %+v: counters did not see the %d frames each way", m, frames)
		}
		if time.Since(m.Since) > time.Minute || time.Since(m.Since) < 0 {
			t.Errorf("mapping %+v: since is not now", m)
		}
	}
	if len(seen) != len(r.Hosts) || len(nat) != len(r.Hosts) {
		t.Errorf("want one call per host with distinct NAT call IDs: %+v", ms)
	}

	for _, c := range clients {
		c.Close()
	}
	r.waitEmpty(t, "the clients hung up")
}

// sim runs one simulator client in host h and returns its JSON lines.
func (r *router) sim(t *testing.T, h lab.Host, args ...string) (lines []map[string]any, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{simBin, "client", "--server", r.ServerAddr.String()}, args...)
	p, err := r.Start("pptpsim-"+h.Name, h.NS, nil, argv...)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Wait(ctx)
	return jsonLines(p.Output()), err
}

func jsonLines(out string) []map[string]any {
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines
}

func events(lines []map[string]any, name string) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["event"] == name {
			out = append(out, l)
		}
	}
	return out
}

// heldSim is a simulator client holding its calls up until released.
type heldSim struct {
	p     *lab.Process
	stdin *os.File
}

func (r *router) holdSim(t *testing.T, h lab.Host, args ...string) *heldSim {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	argv := append([]string{simBin, "client", "--server", r.ServerAddr.String(), "--then", "hold"}, args...)
	p, err := r.Start("pptpsim-hold-"+h.Name, h.NS, pr, argv...)
	if err != nil {
		t.Fatal(err)
	}
	hs := &heldSim{p: p, stdin: pw}
	t.Cleanup(func() { pw.Close(); p.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, "calls held", func() bool {
		return len(events(jsonLines(p.Output()), "holding")) > 0
	}); err != nil {
		t.Fatal(err)
	}
	return hs
}

// release ends the held calls (end of stdin closes the connection).
func (hs *heldSim) release(t *testing.T) {
	t.Helper()
	hs.stdin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.p.Wait(ctx); err != nil {
		t.Errorf("held simulator: %v", err)
	}
}

func (r *router) startSimServer(t *testing.T, args ...string) *lab.Process {
	t.Helper()
	argv := append([]string{simBin, "server", "--listen", r.ServerAddr.String() + ":1723"}, args...)
	p, err := r.Start("pptpsim-server", r.Server, nil, argv...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, "simulator listening", func() bool {
		return strings.Contains(p.Output(), `"listening"`)
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("simulator server: %v", err)
		}
	})
	return p
}

// checkCalls asserts every call line of a client run got its own ID back,
// the server's first GRE packet, and every ping echoed.
func checkCalls(t *testing.T, who string, lines []map[string]any, wantCalls int) {
	t.Helper()
	calls := events(lines, "call")
	if len(calls) != wantCalls {
		t.Fatalf("%s: %d call results, want %d: %v", who, len(calls), wantCalls, lines)
	}
	for _, c := range calls {
		if c["peer_call_id_ok"] != true || c["early_gre"] != true || c["sent"] != c["echoed"] || c["echoed"] == 0.0 {
			t.Errorf("%s: call %v", who, c)
		}
	}
	done := events(lines, "done")
	if len(done) == 0 || done[len(done)-1]["ok"] != true {
		t.Errorf("%s: done = %v", who, done)
	}
}

// TestSimulator covers what the real peers cannot do.
func TestSimulator(t *testing.T) {
	r := newRouter(t, 3, lab.FirewallFW4)

	t.Run("identical call IDs from every host at once", func(t *testing.T) {
		srv := r.startSimServer(t, "--early-gre")
		var held []*heldSim
		for _, h := range r.Hosts {
			held = append(held, r.holdSim(t, h, "--call-ids", "1,2", "--pings", "5"))
		}
		// Every call is up at once: the server saw six calls from the one
		// WAN address, with six distinct call IDs.
		ids := map[float64]bool{}
		for _, c := range events(jsonLines(srv.Output()), "call") {
			ids[c["peer_call_id"].(float64)] = true
		}
		if len(ids) != 2*len(r.Hosts) {
			t.Errorf("server saw peer call IDs %v; want %d distinct", ids, 2*len(r.Hosts))
		}
		ms := r.mappings(t)
		t.Logf("mapping table:\n%s", r.table(t))
		nat := map[int]bool{}
		for _, m := range ms {
			nat[m.NATCallID] = true
			if !m.Established || m.PacketsIn < 5 || m.PacketsOut < 5 || (m.ClientCallID != 1 && m.ClientCallID != 2) {
				t.Errorf("mapping %+v: want an established call 1 or 2 that carried the 5 pings each way", m)
			}
		}
		if len(ms) != 6 || len(nat) != 6 {
			t.Errorf("want 6 mappings with distinct NAT call IDs, got %+v", ms)
		}
		for i, hs := range held {
			hs.release(t)
			checkCalls(t, r.Hosts[i].Name, jsonLines(hs.p.Output()), 2)
		}
		r.waitEmpty(t, "the connections closed")
	})

	for _, seg := range []string{"split", "coalesce"} {
		t.Run("three calls on one connection, "+seg, func(t *testing.T) {
			r.startSimServer(t, "--early-gre", "--segment", seg)
			lines, err := r.sim(t, r.Hosts[0], "--calls", "3", "--segment", seg, "--then", "clear")
			if err != nil {
				t.Fatal(err)
			}
			checkCalls(t, seg, lines, 3)
			if n := len(events(lines, "cleared")); n != 3 {
				t.Errorf("%d calls cleared, want 3", n)
			}
			r.waitEmpty(t, "clear")
		})
	}

	t.Run("Set-Link-Info both ways", func(t *testing.T) {
		srv := r.startSimServer(t, "--early-gre", "--send-sli")
		// Collide with a held call so the IDs really are translated.
		holder := r.holdSim(t, r.Hosts[0], "--call-ids", "9")
		lines, err := r.sim(t, r.Hosts[1], "--call-ids", "9,10", "--sli", "--then", "clear")
		if err != nil {
			t.Fatal(err)
		}
		nat := map[int]int{}
		for _, m := range r.mappings(t) {
			nat[m.ClientCallID]++
		}
		if nat[9] != 1 {
			t.Errorf("after the clear, mappings for client call ID 9: %d, want only the holder's", nat[9])
		}
		holder.release(t)
		for _, c := range events(lines, "call") {
			if c["sli_peer_call_id"] != c["client_call_id"] {
				t.Errorf("client got Set-Link-Info with peer call ID %v, want its own %v", c["sli_peer_call_id"], c["client_call_id"])
			}
		}
		slis := events(jsonLines(srv.Output()), "sli")
		if len(slis) != 2 {
			t.Fatalf("server saw %d Set-Link-Infos, want 2", len(slis))
		}
		for _, s := range slis {
			if s["known"] != true {
				t.Errorf("server got Set-Link-Info for a call it does not know: %v", s)
			}
		}
		r.waitEmpty(t, "clear")
	})

	for _, reading := range []string{"rfc", "kernel"} {
		t.Run("clear, Call-Disconnect-Notify read as "+reading, func(t *testing.T) {
			r.startSimServer(t, "--cdn", reading)
			lines, err := r.sim(t, r.Hosts[2], "--call-ids", "4,5", "--pings", "1", "--then", "clear")
			if err != nil {
				t.Fatal(err)
			}
			want := "server"
			if reading == "kernel" {
				want = "client"
			}
			cleared := events(lines, "cleared")
			if len(cleared) != 2 {
				t.Fatalf("cleared = %v", cleared)
			}
			for _, c := range cleared {
				if c["cdn_call_id_is"] != want {
					t.Errorf("Call-Disconnect-Notify reached the client as %v, want the %s's ID", c, want)
				}
			}
			r.waitEmpty(t, "clear")
		})
	}

	for _, how := range []string{"reset", "close"} {
		t.Run("calls released after a "+how, func(t *testing.T) {
			r.startSimServer(t)
			if _, err := r.sim(t, r.Hosts[0], "--calls", "2", "--then", how); err != nil {
				t.Fatal(err)
			}
			r.waitEmpty(t, how)
		})
	}
}

// TestIdleTimeout: a call whose GRE goes quiet is released even though its
// control connection stays open.
func TestIdleTimeout(t *testing.T) {
	r := newRouter(t, 1, lab.FirewallFW4, "--idle-timeout", "2s")
	r.startSimServer(t)
	hs := r.holdSim(t, r.Hosts[0], "--call-ids", "5", "--pings", "2")
	if ms := r.mappings(t); len(ms) != 1 || ms[0].PacketsOut < 2 {
		t.Fatalf("mappings while the call is fresh: %+v", ms)
	}
	start := time.Now()
	for len(r.mappings(t)) > 0 {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("call still listed %v after its GRE went quiet (idle timeout 2s)", time.Since(start))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("idle call released %v after its last GRE packet (idle timeout 2s)", time.Since(start).Round(100*time.Millisecond))
	if hs.p.Exited() {
		t.Fatal("the control connection should outlive the idle call")
	}
	hs.release(t)
}
