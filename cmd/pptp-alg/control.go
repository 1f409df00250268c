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
	"time"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/alg"
	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
)

// The control socket's requests and replies are defined in controlapi. It
// is root-only: mode 0600, and a peer that is neither root nor the daemon's
// user is refused.

type daemon struct {
	cfg      daemonConfig
	log      *slog.Logger
	router   router
	features []string // kernel features found at start-up
	// owner: the kernel has the table flag owner (Linux 5.12), so the
	// tables are the daemon's socket's, and `nft flush ruleset` leaves them.
	owner  bool
	failed chan error // a gateway goroutine's failure ends the daemon

	// mu orders enable, disable and the control requests that read plane,
	// table and relay. Those three change only while maintain is stopped,
	// so maintain reads them without mu. All are nil while disabled.
	mu          sync.Mutex
	gw          *gateway
	closing     bool
	plane       kernelPlane
	table       *alg.Table
	relay       *alg.Relay    // closes connections from an old WAN address
	callStarted chan struct{} // a call's inbound half went in (startSignal)
	wanAddr     atomic.Pointer[netip.Addr]
	counters    greCounters
	// redirect: new LAN control connections reach the relay by the NAT
	// redirect, not tproxy (relayMode). Set by enable and maintain.
	redirect atomic.Bool
}

func (d *daemon) dialServer(ctx context.Context, from netip.Addr, server netip.AddrPort) (net.Conn, error) {
	if !from.IsValid() {
		from = *d.wanAddr.Load()
	}
	return d.router.Dial(ctx, from, server)
}

// writeMappings writes every call as one JSON array on one line. The
// elements are encoded one at a time, so that a reply for 10,000 calls
// never sits in the daemon's memory whole. An error before the first byte
// is returned for the caller to send instead.
func (d *daemon) writeMappings(w io.Writer) error {
	calls, traffics, err := d.callsAndTraffic()
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
		tr := traffics[i]
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

// callsAndTraffic returns every call and, at the same index, its traffic.
func (d *daemon) callsAndTraffic() ([]alg.CallInfo, []alg.Traffic, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.table == nil { // disabled
		return nil, nil, nil
	}
	calls := d.table.Calls()
	d.counters.mu.Lock()
	defer d.counters.mu.Unlock()
	if err := d.counters.read(d.plane); err != nil {
		return nil, nil, err
	}
	traffics := make([]alg.Traffic, len(calls))
	for i, c := range calls {
		traffics[i] = d.counters.traffic(c)
	}
	return calls, traffics, nil
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
