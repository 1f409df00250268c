package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/pptp-alg/pptp-alg/alg"
	"github.com/pptp-alg/pptp-alg/nat"
)

// maintain keeps the kernel state true to the call table. It acts on
// events, not on a clock: a deletion from the daemon's tables (unowned:
// `nft flush ruleset` takes the NAT hooks with them, and until they are
// back a relayed connection's packets pass untranslated), or their loss
// with a faulty socket (owned), restores them at once; a
// change of links, addresses or routes follows the WAN address and
// rebuilds the fast path. Only while calls exist does a timer run, to read
// the GRE counters and release idle calls. With no calls and nothing
// changing, the daemon sleeps.
func (d *daemon) maintain(ctx context.Context, ev *events) error {
	snat := *d.wanAddr.Load() // the address the SNAT rule holds
	every := expireEvery(d.cfg.idleTimeout)
	expiry := time.NewTicker(every)
	expiry.Stop()
	defer expiry.Stop()
	expiring := false
	var recheckWAN <-chan time.Time
	for {
		var tick <-chan time.Time
		if expiring {
			tick = expiry.C
		}
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-ev.ruleset:
			if !ok {
				return fmt.Errorf("nftables notifications: %w", ev.err())
			}
			d.restoreTable()
			d.checkFastPath() // the netdev table may be gone on its own
		case <-d.plane.Lost():
			// The kernel says nothing when owned tables go with their
			// socket.
			d.log.Warn("nftables socket replaced after a fault; its tables went with it")
			d.restoreTable()
			d.checkFastPath()
		case _, ok := <-ev.links:
			if !ok {
				return fmt.Errorf("rtnetlink notifications: %w", ev.err())
			}
			var changed bool
			if snat, changed = d.followWAN(snat); changed {
				// A connection dialled from the old address just as it
				// changed registers with the relay a moment later.
				recheckWAN = time.After(time.Second)
			}
			d.checkFastPath()
			d.checkRoute()
			d.checkRelayMode()
		case <-recheckWAN:
			recheckWAN = nil
			d.closeOldConnections(*d.wanAddr.Load())
		case <-d.callStarted:
			if !expiring {
				expiry.Reset(every)
				expiring = true
			}
		case <-tick:
			d.expire()
			if d.plane.FastPathStale() { // an element batch failed
				d.checkFastPath()
			}
			if d.table.Len() == 0 {
				// Until the next call: a call set up from now on signals.
				expiry.Stop()
				expiring = false
				d.counters.drop()
			}
		}
	}
}

// startSignal is the data plane the call table writes to: it tells
// maintain that a call's inbound half went in, so that idle expiry runs.
type startSignal struct {
	kernelPlane
	started chan struct{}
}

func (s startSignal) AddInbound(server netip.Addr, natID uint16, client netip.Addr, clientID uint16) error {
	err := s.kernelPlane.AddInbound(server, natID, client, clientID)
	if err == nil {
		s.signal()
	}
	return err
}

// AddMany makes the call table's additions of one read in one batch.
func (s startSignal) AddMany(adds []alg.Addition) []error {
	nadds := make([]nat.Addition, len(adds))
	for i, a := range adds {
		nadds[i] = nat.Addition(a)
	}
	errs := s.kernelPlane.Add(nadds)
	for i, a := range adds {
		if !a.Outbound && errs[i] == nil {
			s.signal()
			break
		}
	}
	return errs
}

func (s startSignal) signal() {
	select {
	case s.started <- struct{}{}:
	default:
	}
}

// restoreTable installs the table and every call's mappings again if the
// table is not whole: `nft flush ruleset`, a firewall reload that flushes,
// a chain or set deleted by hand. The Plane's own changes notify too;
// Intact tells them apart.
func (d *daemon) restoreTable() {
	ok, err := d.plane.Intact()
	if err != nil {
		d.log.Warn("check nftables table", "err", err)
		return
	}
	if ok {
		return
	}
	start := time.Now()
	d.log.Warn("nftables table is gone or incomplete (ruleset flushed?); installing it again")
	if err := d.plane.Reinstall(); err != nil {
		d.log.Error("reinstall nftables table", "err", err)
		return
	}
	if err := d.table.Reinstall(); err != nil {
		d.log.Error("reinstall call mappings", "err", err)
	}
	d.log.Warn("nftables table restored", "calls", d.table.Len(), "took", time.Since(start).Round(time.Millisecond))
}

// checkFastPath rebuilds the fast path when what it was built for changed
// (an interface, MTU, route, the WAN address, its table) and adds every
// call to it again. Meanwhile the calls' GRE takes the ip table.
func (d *daemon) checkFastPath() {
	start := time.Now()
	rebuilt, err := d.plane.CheckFastPath()
	if err != nil {
		d.log.Warn("GRE fast path off; GRE goes through the ip table", "err", err)
		return
	}
	if !rebuilt {
		return
	}
	if err := d.table.Reinstall(); err != nil {
		d.log.Error("add calls to the rebuilt fast path", "err", err)
		return
	}
	d.log.Info("GRE fast path rebuilt", "calls", d.table.Len(), "took", time.Since(start).Round(time.Millisecond))
}

// checkRoute adds the policy rule and route that take tproxied control
// connections to the relay again, if something removed them.
func (d *daemon) checkRoute() {
	restored, err := d.plane.CheckRoute()
	if err != nil {
		d.log.Error("restore the tproxy rule and route", "err", err)
	} else if restored {
		d.log.Warn("tproxy rule or route was gone; added again")
	}
}

// checkRelayMode switches between tproxy and the NAT redirect when a LAN
// bridge starts or stops passing its frames through the IP hooks. Read on
// link events: a bridge comes and goes with them, and a sysctl change is
// seen at the next one.
func (d *daemon) checkRelayMode() {
	if !d.cfg.tproxy {
		return // always the redirect
	}
	bridge := d.router.BridgeNetfilter(d.cfg.lan)
	on := bridge != ""
	if on == d.redirect.Load() {
		return
	}
	if err := d.plane.SetRedirect(on); err != nil {
		d.log.Error("switch LAN control connections' mode", "err", err)
		return
	}
	d.redirect.Store(on)
	d.logRelayMode(bridge)
}

// logFastPath says once, at enable, whether GRE takes the fast path.
func (d *daemon) logFastPath() {
	if on, why := d.plane.FastPath(); on {
		d.log.Info("GRE fast path on", "ingress", ingressDevices(d.cfg.wan, d.cfg.lan))
	} else {
		d.log.Warn("GRE fast path off; GRE goes through the ip table", "why", why)
	}
}

// followWAN tracks the WAN address: new control connections are dialled
// from it, the SNAT rule is moved to it (snat is what the rule holds now;
// the new value is returned), and control connections still bound to an
// older address are closed, releasing their calls: they can never carry
// traffic again. changed says the address changed.
func (d *daemon) followWAN(snat netip.Addr) (_ netip.Addr, changed bool) {
	a, err := d.router.InterfaceIPv4(d.cfg.wan)
	if err != nil {
		return snat, false // no address for now: keep the old until one comes
	}
	if old := *d.wanAddr.Load(); a != old {
		d.log.Warn("WAN address changed", "old", old, "new", a)
		d.wanAddr.Store(&a)
		changed = true
	}
	if a != snat {
		if err := d.plane.SetWANAddr(a); err != nil {
			d.log.Error("update WAN address", "err", err)
		} else {
			snat = a
		}
	}
	d.closeOldConnections(a)
	return snat, changed
}

// closeOldConnections closes the relayed connections not dialled from the
// WAN address a.
func (d *daemon) closeOldConnections(a netip.Addr) {
	if d.relay == nil {
		return
	}
	if n := d.relay.CloseNotFrom(a, "WAN address changed"); n > 0 {
		d.log.Warn("closed control connections from an old WAN address", "connections", n, "wan_addr", a)
	}
}

// expireEvery checks idleness often enough to release a call within a
// tenth of the idle timeout of its going quiet, but at most once a second.
func expireEvery(idle time.Duration) time.Duration {
	return max(time.Second, min(idle/10, 10*time.Second))
}

// greCounters holds the GRE counters last read. Idle expiry and
// `mappings` refill one pair of maps rather than making their own: with
// 10,000 calls the pair is 2 MB. It is dropped with the last call.
type greCounters struct {
	mu  sync.Mutex
	in  map[nat.InKey]nat.Counter
	out map[nat.OutKey]nat.Counter
}

// read refills the maps from plane; the caller holds mu.
func (g *greCounters) read(plane kernelPlane) error {
	if g.in == nil {
		g.in, g.out = map[nat.InKey]nat.Counter{}, map[nat.OutKey]nat.Counter{}
	}
	return plane.Counters(g.in, g.out)
}

// traffic is c's counters as last read; the caller holds mu.
func (g *greCounters) traffic(c alg.CallInfo) alg.Traffic {
	return traffic(c, g.in, g.out)
}

func (g *greCounters) drop() {
	g.mu.Lock()
	g.in, g.out = nil, nil
	g.mu.Unlock()
}

// expire reads the counters and releases idle calls.
func (d *daemon) expire() {
	g := &d.counters
	g.mu.Lock()
	defer g.mu.Unlock()
	// Nobody else can delete from owned tables, so only unowned ones are
	// checked for lost elements: the two lists take 2 MB with 10,000 calls.
	var before []alg.CallInfo
	if !d.owner {
		before = d.table.Calls() // each of these is in the kernel before the dump
	}
	if err := g.read(d.plane); err != nil {
		d.log.Warn("read GRE counters", "err", err)
		return
	}
	// Elements lost while the table stayed (`nft flush set`, a partial
	// reload): add them again. Adding one that exists changes nothing.
	if !d.owner {
		if n := missingMappings(before, d.table.Calls(), g.in, g.out); n > 0 {
			d.log.Warn("GRE mappings missing from the kernel; adding them again", "missing", n)
			if err := d.table.Reinstall(); err != nil {
				d.log.Error("reinstall call mappings", "err", err)
			}
		}
	}
	d.table.Expire(d.cfg.idleTimeout, g.traffic)
}

// missingMappings counts the kernel elements that the calls listed both
// before and after the dump should have and that the dump lacks. A call
// set up or released meanwhile is in only one of the lists.
func missingMappings(before, after []alg.CallInfo, in map[nat.InKey]nat.Counter, out map[nat.OutKey]nat.Counter) int {
	still := make(map[alg.CallInfo]bool, len(after))
	for _, c := range after {
		still[c] = true
	}
	n := 0
	for _, c := range before {
		if !still[c] {
			continue
		}
		if _, ok := in[nat.InKey{Server: c.Server, NATID: c.NATCallID}]; !ok {
			n++
		}
		if _, ok := out[nat.OutKey{Client: c.Client, Server: c.Server, ServerID: c.ServerCallID}]; c.Established && !ok {
			n++
		}
	}
	return n
}

func traffic(c alg.CallInfo, in map[nat.InKey]nat.Counter, out map[nat.OutKey]nat.Counter) alg.Traffic {
	i := in[nat.InKey{Server: c.Server, NATID: c.NATCallID}]
	var o nat.Counter
	if c.Established {
		o = out[nat.OutKey{Client: c.Client, Server: c.Server, ServerID: c.ServerCallID}]
	}
	return alg.Traffic{PacketsIn: i.Packets, BytesIn: i.Bytes, PacketsOut: o.Packets, BytesOut: o.Bytes}
}
