package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/alg"
	"github.com/pptp-alg/pptp-alg/nat"
)

// fakeRouter is an in-memory router: interfaces with addresses, a fake
// plane, event channels the test sends on, and the loopback for relayed
// connections, which it says were all going to pac.
type fakeRouter struct {
	mu             sync.Mutex
	addrs          map[string]netip.Addr
	plane          *fakePlane
	ruleset, links chan struct{}
	pac            netip.AddrPort
	bridge         string // BridgeNetfilter's answer
	rulesetWatched bool   // the last Watch subscribed to ruleset notifications
}

func (r *fakeRouter) InterfaceIPv4(name string) (netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.addrs[name]
	if !ok {
		return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", name)
	}
	return a, nil
}

func (r *fakeRouter) setAddr(name string, a netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs[name] = a
}

func (r *fakeRouter) setBridge(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bridge = name
}

func (r *fakeRouter) BridgeNetfilter([]string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bridge
}

func (r *fakeRouter) OpenPlane(cfg nat.Config) (kernelPlane, error) {
	r.plane = &fakePlane{intact: true, wanAddr: cfg.WANAddr, redirect: cfg.Redirect, lost: make(chan struct{}, 1),
		in: map[nat.InKey]nat.Counter{}, out: map[nat.OutKey]nat.Counter{}}
	return r.plane, nil
}

func (r *fakeRouter) Watch(_ string, _ []string, ruleset bool) (*events, error) {
	r.mu.Lock()
	r.rulesetWatched = ruleset
	r.mu.Unlock()
	ev := &events{links: r.links, err: func() error { return errors.New("fake subscription ended") }, close: func() {}}
	if ruleset {
		ev.ruleset = r.ruleset
	}
	return ev, nil
}

func (r *fakeRouter) OriginalDst(net.Conn) (netip.AddrPort, error) { return r.pac, nil }

func (r *fakeRouter) ListenRelay(port int) (*net.TCPListener, error) {
	return net.ListenTCP("tcp4", &net.TCPAddr{Port: port})
}

func (r *fakeRouter) Dial(ctx context.Context, local netip.Addr, server netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialTCP(ctx, "tcp4", netip.AddrPortFrom(local, 0), server)
}

func (r *fakeRouter) KernelHelper(client, dst netip.AddrPort) (string, error) { return "", nil }

// fakePlane is an in-memory kernelPlane. Without its table (flush) it
// refuses additions as the kernel does.
type fakePlane struct {
	mu                               sync.Mutex
	intact                           bool
	wanAddr                          netip.Addr
	in                               map[nat.InKey]nat.Counter
	out                              map[nat.OutKey]nat.Counter
	reinstalls, fastChecks, counters int
	closed                           bool
	redirect                         bool // nat.Config.Redirect, as SetRedirect leaves it
	switches                         int  // SetRedirect calls that changed it
	lost                             chan struct{}
}

func (p *fakePlane) AddInbound(server netip.Addr, natID uint16, client netip.Addr, clientID uint16) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.intact {
		return unix.ENOENT
	}
	p.in[nat.InKey{Server: server, NATID: natID}] = nat.Counter{}
	return nil
}

func (p *fakePlane) Add(adds []nat.Addition) []error {
	errs := make([]error, len(adds))
	for i, a := range adds {
		if a.Outbound {
			errs[i] = p.AddOutbound(a.Client, a.Server, a.ServerID)
		} else {
			errs[i] = p.AddInbound(a.Server, a.NATID, a.Client, a.ClientID)
		}
	}
	return errs
}

func (p *fakePlane) DeleteInbound(server netip.Addr, natID uint16) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.in, nat.InKey{Server: server, NATID: natID})
	return nil
}

func (p *fakePlane) AddOutbound(client, server netip.Addr, serverID uint16) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.intact {
		return unix.ENOENT
	}
	p.out[nat.OutKey{Client: client, Server: server, ServerID: serverID}] = nat.Counter{}
	return nil
}

func (p *fakePlane) DeleteOutbound(client, server netip.Addr, serverID uint16) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.out, nat.OutKey{Client: client, Server: server, ServerID: serverID})
	return nil
}

func (p *fakePlane) Intact() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.intact, nil
}

func (p *fakePlane) Reinstall() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.intact = true
	clear(p.in)
	clear(p.out)
	p.reinstalls++
	return nil
}

func (p *fakePlane) SetWANAddr(a netip.Addr) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wanAddr = a
	return nil
}

func (p *fakePlane) CheckFastPath() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fastChecks++
	return false, nil
}

func (p *fakePlane) SetRedirect(on bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.redirect != on {
		p.redirect = on
		p.switches++
	}
	return nil
}

// mode returns the relay mode and the number of switches so far.
func (p *fakePlane) mode() (redirect bool, switches int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.redirect, p.switches
}

func (p *fakePlane) CheckRoute() (bool, error)      { return false, nil }
func (p *fakePlane) FastPathStale() bool            { return false }
func (p *fakePlane) FastPath() (on bool, why error) { return true, nil }

func (p *fakePlane) Counters(in map[nat.InKey]nat.Counter, out map[nat.OutKey]nat.Counter) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counters++
	clear(in)
	clear(out)
	for k, v := range p.in {
		in[k] = v
	}
	for k, v := range p.out {
		out[k] = v
	}
	return nil
}

func (p *fakePlane) Lost() <-chan struct{} { return p.lost }

// loseSocket is a socket fault that took owned tables with the socket: no
// ruleset notification, only Lost.
func (p *fakePlane) loseSocket() {
	p.flush()
	p.lost <- struct{}{}
}

func (p *fakePlane) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

// flush is `nft flush ruleset`.
func (p *fakePlane) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.intact = false
	clear(p.in)
	clear(p.out)
}

// read returns a snapshot under the lock.
func (p *fakePlane) read() (in, out, reinstalls, fastChecks, counters int, wan netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.in), len(p.out), p.reinstalls, p.fastChecks, p.counters, p.wanAddr
}

var (
	lo1 = netip.MustParseAddr("127.0.0.1")
	lo2 = netip.MustParseAddr("127.0.0.2")
)

// startGateway runs an enabled daemon on the fake router, whose WAN address
// is 127.0.0.1, with a PPTP server on the loopback that accepts every
// outgoing call.
func startGateway(t *testing.T, idle time.Duration) (*daemon, *fakeRouter, netip.AddrPort) {
	t.Helper()
	return startGatewayTProxy(t, idle, false)
}

// startGatewayTProxy is startGateway with --lan-control tproxy if tproxy.
func startGatewayTProxy(t *testing.T, idle time.Duration, tproxy bool) (*daemon, *fakeRouter, netip.AddrPort) {
	t.Helper()
	return startGatewayWith(t, idle, tproxy, false)
}

// startGatewayWith is startGateway with --lan-control tproxy if tproxy, on
// a kernel with the table flag owner if owner.
func startGatewayWith(t *testing.T, idle time.Duration, tproxy, owner bool) (*daemon, *fakeRouter, netip.AddrPort) {
	t.Helper()
	pac := startPAC(t)
	r := &fakeRouter{
		addrs:   map[string]netip.Addr{"wan": lo1},
		ruleset: make(chan struct{}, 1), links: make(chan struct{}, 1),
		pac: pac,
	}
	port := freePort(t)
	d := &daemon{
		cfg: daemonConfig{lan: []string{"lan"}, wan: "wan", relayPort: uint(port), table: "pptp_alg_test",
			idleTimeout: idle, controlIdle: time.Minute, limits: alg.DefaultLimits, tproxy: tproxy},
		log:    slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		router: r, owner: owner, failed: make(chan error, 1),
	}
	if _, err := d.enable(); err != nil {
		t.Fatalf("enable: %v", err)
	}
	t.Cleanup(func() {
		if _, _, err := d.disable(); err != nil {
			t.Errorf("disable: %v", err)
		}
		if !r.plane.closed {
			t.Error("plane not closed by disable")
		}
	})
	return d, r, netip.AddrPortFrom(lo1, uint16(port))
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPAC is a PPTP server that answers each Outgoing-Call-Request with a
// connected Outgoing-Call-Reply, and ignores the rest.
func startPAC(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var id atomic.Uint32 // server call IDs, unique at this server
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					m, err := readMessage(c)
					if err != nil {
						return
					}
					if req, ok := m.(*alg.OutgoingCallRequest); ok {
						r := &alg.OutgoingCallReply{CallID: uint16(100 + id.Add(1)), PeerCallID: req.CallID, ResultCode: alg.OutgoingCallResultConnected}
						if _, err := c.Write(r.Append(nil)); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func readMessage(c net.Conn) (alg.Message, error) {
	hdr := make([]byte, alg.HeaderLen)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, err
	}
	n := int(hdr[0])<<8 | int(hdr[1])
	if n < alg.HeaderLen {
		return nil, errors.New("bad length")
	}
	m := append(hdr, make([]byte, n-alg.HeaderLen)...)
	if _, err := io.ReadFull(c, m[alg.HeaderLen:]); err != nil {
		return nil, err
	}
	return alg.Parse(m)
}

// call opens a control connection through the relay and sets up one
// call on it.
func call(t *testing.T, relay netip.AddrPort, clientID uint16) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", relay.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write((&alg.OutgoingCallRequest{CallID: clientID}).Append(nil)); err != nil {
		t.Fatal(err)
	}
	m, err := readMessage(c)
	if err != nil {
		t.Fatalf("reading the Outgoing-Call-Reply: %v", err)
	}
	if r, ok := m.(*alg.OutgoingCallReply); !ok || r.PeerCallID != clientID || r.ResultCode != alg.OutgoingCallResultConnected {
		t.Fatalf("reply %#v; want a connected Outgoing-Call-Reply to call %d", m, clientID)
	}
	c.SetDeadline(time.Time{})
	return c
}

// eventually waits up to 3 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("after 3s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMaintainRestoresFlushedTable(t *testing.T) {
	d, r, relay := startGateway(t, time.Hour)
	call(t, relay, 1)
	call(t, relay, 2)
	if in, out, _, _, _, _ := r.plane.read(); in != 2 || out != 2 {
		t.Fatalf("after two calls: %d inbound, %d outbound elements", in, out)
	}

	// An event while the table is whole changes nothing.
	r.ruleset <- struct{}{}
	eventually(t, "the fast path checked after a ruleset event", func() bool {
		_, _, _, fc, _, _ := r.plane.read()
		return fc >= 1
	})
	if _, _, re, _, _, _ := r.plane.read(); re != 0 {
		t.Errorf("%d reinstalls of a whole table; want 0", re)
	}

	r.plane.flush()
	r.ruleset <- struct{}{}
	eventually(t, "table and both calls' elements restored", func() bool {
		in, out, re, _, _, _ := r.plane.read()
		return re == 1 && in == 2 && out == 2
	})
	if n := d.table.Len(); n != 2 {
		t.Errorf("%d calls after the restore; want 2", n)
	}
}

// TestOwnedTablesUnwatched: a daemon whose tables are owned subscribes to
// no ruleset notifications (no one else can delete from its tables, and
// each element would cost the kernel a notification); one whose tables are
// not owned does.
func TestOwnedTablesUnwatched(t *testing.T) {
	for _, owner := range []bool{false, true} {
		r := &fakeRouter{addrs: map[string]netip.Addr{"wan": lo1}, links: make(chan struct{}, 1), ruleset: make(chan struct{}, 1)}
		d := &daemon{
			cfg: daemonConfig{lan: []string{"lan"}, wan: "wan", relayPort: uint(freePort(t)), table: "pptp_alg_test",
				idleTimeout: time.Hour, controlIdle: time.Minute, limits: alg.DefaultLimits},
			log:    slog.New(slog.NewTextHandler(testWriter{t}, nil)),
			router: r, owner: owner, failed: make(chan error, 1),
		}
		if _, err := d.enable(); err != nil {
			t.Fatalf("enable: %v", err)
		}
		if r.rulesetWatched == owner {
			t.Errorf("tables owned %v: ruleset notifications watched %v; want %v", owner, r.rulesetWatched, !owner)
		}
		if _, _, err := d.disable(); err != nil {
			t.Errorf("disable: %v", err)
		}
	}
}

// TestMaintainRestoresLostTables: owned tables that went with a faulty
// socket, of which the kernel sends no notification, are restored with
// every call's elements.
func TestMaintainRestoresLostTables(t *testing.T) {
	d, r, relay := startGateway(t, time.Hour)
	call(t, relay, 1)
	call(t, relay, 2)
	r.plane.loseSocket()
	eventually(t, "table and both calls' elements restored", func() bool {
		in, out, re, _, _, _ := r.plane.read()
		return re == 1 && in == 2 && out == 2
	})
	if n := d.table.Len(); n != 2 {
		t.Errorf("%d calls after the restore; want 2", n)
	}
}

func TestMaintainFollowsWANAddress(t *testing.T) {
	d, r, relay := startGateway(t, time.Hour)
	c := call(t, relay, 1)
	_, _, _, checks, _, _ := r.plane.read()

	// An event that changes nothing keeps the connection.
	r.links <- struct{}{}
	eventually(t, "fast path checked after a links event", func() bool {
		_, _, _, fc, _, _ := r.plane.read()
		return fc > checks
	})
	if d.table.Len() != 1 {
		t.Fatal("a links event without an address change released the call")
	}

	r.setAddr("wan", lo2)
	r.links <- struct{}{}
	eventually(t, "SNAT rule moved to the new address", func() bool {
		_, _, _, _, _, wan := r.plane.read()
		return wan == lo2
	})
	if got := *d.wanAddr.Load(); got != lo2 {
		t.Errorf("daemon dials from %v; want %v", got, lo2)
	}
	// The connection from the old address is closed, its call released.
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, unix.ECONNRESET) {
		t.Errorf("control connection from the old address: read %v; want it closed", err)
	}
	eventually(t, "call released and its elements deleted", func() bool {
		in, out, _, _, _, _ := r.plane.read()
		return d.table.Len() == 0 && in == 0 && out == 0
	})

	// The WAN losing its address keeps the old one until another comes.
	r.mu.Lock()
	delete(r.addrs, "wan")
	r.mu.Unlock()
	r.links <- struct{}{}
	time.Sleep(50 * time.Millisecond)
	if _, _, _, _, _, wan := r.plane.read(); wan != lo2 {
		t.Errorf("SNAT address %v after the WAN lost its address; want %v kept", wan, lo2)
	}
}

// TestMaintainRelayMode: with --lan-control tproxy, the daemon takes LAN
// control connections by the NAT redirect while a LAN bridge passes its
// frames through the IP hooks, by tproxy otherwise, chosen at enable and
// again at each links event, and status says which. A switch keeps the
// calls.
func TestMaintainRelayMode(t *testing.T) {
	d, r, relay := startGatewayTProxy(t, time.Hour, true)
	if redirect, _ := r.plane.mode(); redirect || d.status().LANControl != "tproxy" {
		t.Fatalf("enabled without a bridge passing the IP hooks: redirect %v, status %q; want tproxy", redirect, d.status().LANControl)
	}
	call(t, relay, 1)

	r.setBridge("br-lan")
	r.links <- struct{}{}
	eventually(t, "redirect after a links event", func() bool { on, _ := r.plane.mode(); return on })
	if got := d.status().LANControl; got != "redirect" {
		t.Errorf("status lan_control %q in redirect mode", got)
	}
	r.links <- struct{}{} // nothing changed: no switch
	r.setBridge("")
	r.links <- struct{}{}
	eventually(t, "tproxy again after a links event", func() bool { on, _ := r.plane.mode(); return !on })
	if _, n := r.plane.mode(); n != 2 {
		t.Errorf("%d switches, want 2", n)
	}
	if got := d.status().LANControl; got != "tproxy" {
		t.Errorf("status lan_control %q back in tproxy mode", got)
	}
	if d.table.Len() != 1 {
		t.Errorf("%d calls after the switches, want the 1 kept", d.table.Len())
	}

	// Enabled while a bridge passes the IP hooks: the redirect from the start.
	r.setBridge("br-lan")
	if _, _, err := d.disable(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.enable(); err != nil {
		t.Fatal(err)
	}
	if redirect, _ := r.plane.mode(); !redirect || d.status().LANControl != "redirect" {
		t.Errorf("enabled with a bridge passing the IP hooks: redirect %v, status %q; want redirect", redirect, d.status().LANControl)
	}
}

// TestMaintainRelayModeDefault: by default the redirect serves from the
// start, and links events, with or without a bridge passing the IP hooks,
// never switch to tproxy.
func TestMaintainRelayModeDefault(t *testing.T) {
	d, r, _ := startGateway(t, time.Hour)
	if redirect, _ := r.plane.mode(); !redirect || d.status().LANControl != "redirect" {
		t.Fatalf("enabled by default: redirect %v, status %q; want redirect", redirect, d.status().LANControl)
	}
	r.setBridge("br-lan")
	r.links <- struct{}{}
	r.setBridge("")
	r.links <- struct{}{}
	time.Sleep(100 * time.Millisecond)
	if redirect, n := r.plane.mode(); !redirect || n != 0 || d.status().LANControl != "redirect" {
		t.Errorf("after links events: redirect %v, %d switches, status %q; want redirect, none", redirect, n, d.status().LANControl)
	}
}

// TestMaintainIdleExpiry checks that the counters are read only while
// calls exist, that a call whose GRE stays idle is released, and that an
// element lost meanwhile is added again.
func TestMaintainIdleExpiry(t *testing.T) {
	d, r, relay := startGateway(t, 2*time.Second) // checked every second
	time.Sleep(1500 * time.Millisecond)
	if _, _, _, _, n, _ := r.plane.read(); n != 0 {
		t.Fatalf("counters read %d times with no call; want 0", n)
	}

	call(t, relay, 1)
	// Someone deletes the call's inbound element (`nft flush set`).
	r.plane.mu.Lock()
	clear(r.plane.in)
	r.plane.mu.Unlock()
	eventually(t, "the lost element added again at the next counter reading", func() bool {
		in, _, _, _, _, _ := r.plane.read()
		return in == 1
	})
	// No GRE moves: the call goes after 2 s idle.
	eventually(t, "the idle call released", func() bool {
		in, out, _, _, _, _ := r.plane.read()
		return d.table.Len() == 0 && in == 0 && out == 0
	})
	_, _, _, _, n, _ := r.plane.read()
	time.Sleep(2500 * time.Millisecond)
	if _, _, _, _, m, _ := r.plane.read(); m != n {
		t.Errorf("counters read %d more times after the last call went; want none", m-n)
	}
	d.counters.mu.Lock()
	defer d.counters.mu.Unlock()
	if d.counters.in != nil || d.counters.out != nil {
		t.Error("the counter maps kept after the last call went")
	}
}

// TestMaintainOwnedTablesTrusted: owned tables change only through the
// daemon, so idle checks do not list the calls to look for lost elements
// (an element deleted behind its back stays gone); expiry works as before.
func TestMaintainOwnedTablesTrusted(t *testing.T) {
	d, r, relay := startGatewayWith(t, 4*time.Second, false, true) // checked every second
	call(t, relay, 1)
	r.plane.mu.Lock()
	clear(r.plane.in)
	r.plane.mu.Unlock()
	eventually(t, "two counter readings", func() bool {
		_, _, _, _, n, _ := r.plane.read()
		return n >= 2
	})
	if in, _, _, _, _, _ := r.plane.read(); in != 0 || d.table.Len() != 1 {
		t.Errorf("%d inbound elements for %d calls after two readings; want 0 for 1: nothing re-added", in, d.table.Len())
	}
	eventually(t, "the idle call released", func() bool { return d.table.Len() == 0 })
}

// TestMaintainEndsWithItsSubscription: a notification socket that fails
// ends the daemon (exit 1), rather than leaving it deaf.
func TestMaintainEndsWithItsSubscription(t *testing.T) {
	d, r, _ := startGateway(t, time.Hour)
	close(r.ruleset)
	select {
	case err := <-d.failed:
		if err == nil || !strings.Contains(err.Error(), "nftables notifications") {
			t.Errorf("failure %v; want it to name the nftables notifications", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("daemon did not fail")
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// TestStartSignalAddMany: a read's additions made together start idle
// expiry as a single call's do, once an inbound half went in.
func TestStartSignalAddMany(t *testing.T) {
	p := &fakePlane{intact: true, in: map[nat.InKey]nat.Counter{}, out: map[nat.OutKey]nat.Counter{}}
	s := startSignal{p, make(chan struct{}, 1)}
	s.AddMany([]alg.Addition{{Outbound: true, Client: lo1, Server: lo2, ServerID: 5}})
	select {
	case <-s.started:
		t.Fatal("an outbound half alone started expiry")
	default:
	}
	errs := s.AddMany([]alg.Addition{{Server: lo2, NATID: 1, Client: lo1, ClientID: 1}, {Server: lo2, NATID: 2, Client: lo1, ClientID: 2}})
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("AddMany: %v", errs)
	}
	select {
	case <-s.started:
	default:
		t.Fatal("inbound halves went in and expiry did not start")
	}
	if len(p.in) != 2 || len(p.out) != 1 {
		t.Errorf("plane holds %d inbound, %d outbound; want 2 and 1", len(p.in), len(p.out))
	}
}
