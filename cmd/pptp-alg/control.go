package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/alg"
	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
	"github.com/pptp-alg/pptp-alg/conntrack"
	"github.com/pptp-alg/pptp-alg/nat"
)

// The control socket's requests and replies are defined in controlapi. It
// is root-only: mode 0600, and a peer that is neither root nor the daemon's
// user is refused.

type daemon struct {
	cfg      daemonConfig
	log      *slog.Logger
	tracker  *conntrack.Tracker
	features []string   // kernel features found at start-up
	failed   chan error // a gateway goroutine's failure ends the daemon

	// mu orders enable, disable and the control requests that read plane,
	// table and relay. Those three change only while maintain is stopped,
	// so maintain reads them without mu. All are nil while disabled.
	mu      sync.Mutex
	gw      *gateway
	closing bool
	plane   *nat.Plane
	table   *alg.Table
	relay   *alg.Relay // closes connections from an old WAN address
	wanAddr atomic.Pointer[netip.Addr]
}

func (d *daemon) dialServer(ctx context.Context, from netip.Addr, server netip.AddrPort) (net.Conn, error) {
	if !from.IsValid() {
		from = *d.wanAddr.Load()
	}
	mark := int(d.cfg.relayMark)
	dialer := net.Dialer{
		KeepAlive: 30 * time.Second,
		// The mark keeps relay_output from redirecting the relay's own
		// connection back to the relay.
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
			}); err != nil {
				return err
			}
			return serr
		},
	}
	// DialTCP with addresses, not DialContext with a string: the daemon
	// never resolves a name, and leaving the resolver out keeps about
	// 100 KiB of DNS code out of the router binary.
	return dialer.DialTCP(ctx, "tcp4", netip.AddrPortFrom(from, 0), server)
}

// maintain keeps the kernel state true to the call table: it restores the
// table after a flush, follows the WAN address, and expires idle calls.
func (d *daemon) maintain(ctx context.Context) error {
	check := time.NewTicker(tableCheckEvery)
	defer check.Stop()
	lastTick, lastExpire := time.Now(), time.Now()
	snat := *d.wanAddr.Load() // the address the SNAT rule holds
	// Refilled by every idle check rather than made anew every few seconds;
	// they keep the size of the largest reading.
	in, out := map[nat.InKey]nat.Counter{}, map[nat.OutKey]nat.Counter{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-check.C:
		}
		d.restoreTable()
		if time.Since(lastTick) < time.Second {
			continue
		}
		lastTick = time.Now()
		snat = d.followWAN(snat)
		d.checkFastPath()
		if time.Since(lastExpire) >= expireEvery(d.cfg.idleTimeout) {
			lastExpire = time.Now()
			d.expire(in, out)
		}
	}
}

// tableCheckEvery is how often maintain looks for its table. A flush takes
// the NAT hooks with it, so until the table is back, a relayed connection's
// packets pass untranslated and the client may answer one with a RST; the
// check, one netlink round trip, keeps that window short.
const tableCheckEvery = 100 * time.Millisecond

// restoreTable installs the table and every call's mappings again if the
// table is gone: `nft flush ruleset`, a firewall reload that flushes.
func (d *daemon) restoreTable() {
	ok, err := d.plane.Installed()
	if err != nil {
		d.log.Warn("check nftables table", "err", err)
		return
	}
	if ok {
		return
	}
	start := time.Now()
	d.log.Warn("nftables table is gone (ruleset flushed?); installing it again")
	if err := d.plane.Reinstall(); err != nil {
		d.log.Error("reinstall nftables table", "err", err)
		return
	}
	if err := d.table.Reinstall(); err != nil {
		d.log.Error("reinstall call mappings", "err", err)
	}
	d.log.Warn("nftables table restored", "calls", len(d.table.Calls()), "took", time.Since(start).Round(time.Millisecond))
}

// checkFastPath rebuilds the fast path when what it was built for changed
// (an interface, MTU, route, the WAN address) and adds every call to it
// again. Meanwhile the calls' GRE takes the ip table.
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
	d.log.Info("GRE fast path rebuilt", "calls", len(d.table.Calls()), "took", time.Since(start).Round(time.Millisecond))
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
// traffic again. Checking every tick also catches a connection dialled
// from the old address just as it changed.
func (d *daemon) followWAN(snat netip.Addr) netip.Addr {
	a, err := interfaceIPv4(d.cfg.wan)
	if err != nil {
		return snat // no address for now: keep the old until one comes
	}
	if old := *d.wanAddr.Load(); a != old {
		d.log.Warn("WAN address changed", "old", old, "new", a)
		d.wanAddr.Store(&a)
	}
	if a != snat {
		if err := d.plane.SetWANAddr(a); err != nil {
			d.log.Error("update WAN address", "err", err)
		} else {
			snat = a
		}
	}
	if d.relay != nil {
		if n := d.relay.CloseNotFrom(a, "WAN address changed"); n > 0 {
			d.log.Warn("closed control connections from an old WAN address", "connections", n, "wan_addr", a)
		}
	}
	return snat
}

// expireEvery checks idleness often enough to release a call within a
// tenth of the idle timeout of its going quiet, but at most once a second.
func expireEvery(idle time.Duration) time.Duration {
	return max(time.Second, min(idle/10, 10*time.Second))
}

// expire reads the counters into in and out and releases idle calls.
func (d *daemon) expire(in map[nat.InKey]nat.Counter, out map[nat.OutKey]nat.Counter) {
	before := d.table.Calls() // each of these is in the kernel before the dump
	if err := d.plane.Counters(in, out); err != nil {
		d.log.Warn("read GRE counters", "err", err)
		return
	}
	// Elements lost while the table stayed (`nft flush set`, a partial
	// reload): add them again. Adding one that exists changes nothing.
	if n := missingMappings(before, d.table.Calls(), in, out); n > 0 {
		d.log.Warn("GRE mappings missing from the kernel; adding them again", "missing", n)
		if err := d.table.Reinstall(); err != nil {
			d.log.Error("reinstall call mappings", "err", err)
		}
	}
	d.table.Expire(d.cfg.idleTimeout, func(c alg.CallInfo) alg.Traffic {
		return traffic(c, in, out)
	})
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

// writeMappings writes every call as one JSON array on one line. The
// elements are encoded one at a time, so that a reply for 10,000 calls
// never sits in the daemon's memory whole. An error before the first byte
// is returned for the caller to send instead.
func (d *daemon) writeMappings(w io.Writer) error {
	calls, in, out, err := d.callsAndCounters()
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	var one bytes.Buffer
	enc := json.NewEncoder(&one)
	bw.WriteByte('[')
	for i, c := range calls {
		if i > 0 {
			bw.WriteByte(',')
		}
		tr := traffic(c, in, out)
		one.Reset()
		enc.Encode(controlapi.Mapping{
			Client: c.Client.String(), ClientCallID: int(c.ClientCallID),
			Server: c.Server.String(), ServerCallID: int(c.ServerCallID),
			NATCallID: int(c.NATCallID), Established: c.Established,
			PacketsIn: tr.PacketsIn, PacketsOut: tr.PacketsOut,
			BytesIn: tr.BytesIn, BytesOut: tr.BytesOut,
			Since: c.Since.UTC().Truncate(time.Second),
		})
		bw.Write(bytes.TrimSuffix(one.Bytes(), []byte("\n"))) // the reply is one line
	}
	bw.WriteString("]\n")
	bw.Flush()
	return nil
}

func (d *daemon) callsAndCounters() ([]alg.CallInfo, map[nat.InKey]nat.Counter, map[nat.OutKey]nat.Counter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.table == nil { // disabled
		return nil, nil, nil, nil
	}
	calls := d.table.Calls()
	in, out := make(map[nat.InKey]nat.Counter, len(calls)), make(map[nat.OutKey]nat.Counter, len(calls))
	if err := d.plane.Counters(in, out); err != nil {
		return nil, nil, nil, err
	}
	return calls, in, out, nil
}

func listenControl(path string) (*net.UnixListener, error) {
	// A socket left by a killed run is stale; one that answers is not.
	if socketAnswers(path) {
		return nil, fmt.Errorf("control socket %s: another pptp-alg is running", path)
	}
	os.Remove(path)
	old := umask(0o077)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

func (d *daemon) serveControl(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control socket: %w", err)
		}
		go d.answer(c)
	}
}

func socketAnswers(path string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var dialer net.Dialer
	c, err := dialer.DialUnix(ctx, "unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// peerAllowed reports whether the peer of a control connection is root or
// the daemon's own user. The socket's mode already keeps others out; this
// holds if someone loosens it, since enable and disable change the router.
func peerAllowed(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return err == nil && cred != nil && (cred.Uid == 0 || int(cred.Uid) == os.Geteuid())
}

func (d *daemon) answer(c net.Conn) {
	defer c.Close()
	// disable waits for the relayed connections to end; that takes
	// milliseconds, so 5 s is ample.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	if !peerAllowed(c) {
		json.NewEncoder(c).Encode(controlapi.Error{Error: "permission denied: root only"})
		return
	}
	var reply any
	cmd, args, _ := strings.Cut(strings.TrimSpace(line), " ")
	if args != "" && cmd != controlapi.RequestDrop {
		cmd = strings.TrimSpace(line) // only drop takes arguments
	}
	switch cmd {
	case controlapi.RequestStatus:
		reply = d.status()
	case controlapi.RequestEnable, controlapi.RequestDisable:
		r, err := d.toggle(cmd == controlapi.RequestEnable)
		if err != nil {
			reply = controlapi.Error{Error: err.Error()}
		} else {
			reply = r
		}
	case controlapi.RequestMappings:
		err := d.writeMappings(c)
		if err == nil {
			return
		}
		reply = controlapi.Error{Error: err.Error()}
	case controlapi.RequestDrop:
		server, natID, err := parseDrop(args)
		if err == nil {
			reply, err = d.drop(server, natID)
		}
		if err != nil {
			reply = controlapi.Error{Error: err.Error()}
		}
	case controlapi.RequestDebug:
		// For the leak tests: what churn must give back. The heap is read
		// after a collection, so that it counts only what is still held.
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		reply = controlapi.Debug{Goroutines: runtime.NumGoroutine(), HeapAlloc: m.HeapAlloc}
	default:
		reply = controlapi.Error{Error: fmt.Sprintf("unknown request %q", cmd)}
	}
	json.NewEncoder(c).Encode(reply)
}
