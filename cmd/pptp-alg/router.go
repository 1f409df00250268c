package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/alg"
	"github.com/pptp-alg/pptp-alg/conntrack"
	"github.com/pptp-alg/pptp-alg/nat"
)

// router is what the daemon needs of the machine it runs on: its
// interfaces, its nftables state, notice when either changes, and the
// sockets of relayed connections. hostRouter is the real one; the tests
// use an in-memory fake.
type router interface {
	// InterfaceIPv4 returns the first IPv4 address of an interface.
	InterfaceIPv4(name string) (netip.Addr, error)
	// OpenPlane installs the nftables tables for cfg.
	OpenPlane(cfg nat.Config) (kernelPlane, error)
	// Watch subscribes to changes of the links named, their IPv4
	// addresses, routes and policy rules, and, with ruleset, to deletions
	// from the tables named table.
	Watch(table string, links []string, ruleset bool) (*events, error)
	// BridgeNetfilter names a LAN interface that is a bridge whose frames
	// pass the IP hooks (bridge-nf-call-iptables=1), or "" if none does.
	BridgeNetfilter(lan []string) string
	// ListenRelay opens the relay's listening socket.
	ListenRelay(port int) (*net.TCPListener, error)
	// OriginalDst says where a relayed connection was going.
	OriginalDst(c net.Conn) (netip.AddrPort, error)
	// Dial connects to a server from the local address.
	Dial(ctx context.Context, local netip.Addr, server netip.AddrPort) (net.Conn, error)
	// KernelHelper names the conntrack helper on a connection, or "".
	KernelHelper(client, dst netip.AddrPort) (string, error)
}

// kernelPlane is what the daemon needs of its nftables tables (nat.Plane).
type kernelPlane interface {
	alg.DataPlane
	Add(adds []nat.Addition) []error // several at once, in one batch
	Intact() (bool, error)
	Reinstall() error
	SetWANAddr(a netip.Addr) error
	CheckFastPath() (rebuilt bool, err error)
	CheckRoute() (restored bool, err error)
	SetRedirect(on bool) error
	FastPathStale() bool
	FastPath() (on bool, why error)
	Counters(in map[nat.InKey]nat.Counter, out map[nat.OutKey]nat.Counter) error
	Lost() <-chan struct{}
	Close() error
}

// events are the two subscriptions maintain waits on. A channel receives a
// value (coalesced) when something may have changed, and is closed if its
// subscription fails; err says why.
type events struct {
	ruleset <-chan struct{} // the daemon's tables lost something
	links   <-chan struct{} // links, IPv4 addresses or routes changed
	err     func() error
	close   func()
}

// hostRouter is the router the daemon runs on.
type hostRouter struct {
	tracker *conntrack.Tracker
	mark    int // on the relay's connections to servers
}

func (hostRouter) InterfaceIPv4(name string) (netip.Addr, error) { return interfaceIPv4(name) }

func (hostRouter) OpenPlane(cfg nat.Config) (kernelPlane, error) { return nat.Open(cfg) }

// ListenRelay listens on every address, transparently (IP_TRANSPARENT):
// tproxy hands the relay the LAN's connections to servers, whose accepted
// sockets then keep the server's address as their own.
func (hostRouter) ListenRelay(port int) (*net.TCPListener, error) {
	// ListenTCP with an address, not ListenConfig with a string, which
	// would bring in the name resolver. The option may come after listen:
	// tproxy checks it when it looks the socket up, and accepted sockets
	// inherit it.
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{Port: port})
	if err != nil {
		return nil, err
	}
	rc, err := ln.SyscallConn()
	if err != nil {
		ln.Close()
		return nil, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
	}); err != nil {
		serr = err
	}
	if serr != nil {
		ln.Close()
		return nil, fmt.Errorf("relay socket: IP_TRANSPARENT: %w", serr)
	}
	return ln, nil
}

// OriginalDst: a LAN connection that came by tproxy has the server's
// address as its socket's own, port 1723 (never the relay's port). The
// others came by a redirect, of the LAN (to the router's LAN address) or of
// the router's own connections (to the loopback), which conntrack
// remembers.
func (hostRouter) OriginalDst(c net.Conn) (netip.AddrPort, error) {
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if a := local.Addr().Unmap(); local.Port() == 1723 && !a.IsLoopback() {
		return netip.AddrPortFrom(a, local.Port()), nil
	}
	return conntrack.OriginalDst(c)
}

// BridgeNetfilter reads this network namespace's bridge-nf-call-iptables
// (absent without br_netfilter: off) and, if it is 1, whether a LAN
// interface is a bridge. br_netfilter then runs the IP prerouting hooks
// before the bridge hands a frame up, and the IP layer drops the socket
// that tproxy gave the packet.
func (hostRouter) BridgeNetfilter(lan []string) string {
	b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	if err != nil || strings.TrimSpace(string(b)) != "1" {
		return ""
	}
	for _, name := range lan {
		// Only bridges have it. ReadFile rather than Stat, which the
		// binary would carry for this alone.
		if _, err := os.ReadFile("/sys/class/net/" + name + "/bridge/bridge_id"); err == nil {
			return name
		}
	}
	return ""
}

func (r hostRouter) KernelHelper(client, dst netip.AddrPort) (string, error) {
	return r.tracker.Helper(client, dst)
}

func (hostRouter) Watch(table string, links []string, ruleset bool) (*events, error) {
	ln, err := nat.WatchLinks(0, links)
	if err != nil {
		return nil, err
	}
	ev := &events{links: ln.C, err: ln.Err, close: func() { ln.Close() }}
	if !ruleset {
		return ev, nil
	}
	rs, err := nat.WatchRuleset(0, table)
	if err != nil {
		ln.Close()
		return nil, err
	}
	ev.ruleset = rs.C
	ev.err = func() error {
		if err := rs.Err(); err != nil {
			return err
		}
		return ln.Err()
	}
	ev.close = func() { rs.Close(); ln.Close() }
	return ev, nil
}

func (r hostRouter) Dial(ctx context.Context, local netip.Addr, server netip.AddrPort) (net.Conn, error) {
	dialer := net.Dialer{
		KeepAlive: 30 * time.Second,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				// The mark keeps relay_output from redirecting the relay's
				// own connection back to the relay.
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, r.mark)
				// The dial binds to the WAN address. Without this, bind
				// picks the port, searching every bound port for a
				// conflict, which slows down as connections in TIME_WAIT
				// pile up; with it, connect picks one that is free for
				// this server, as for an unbound socket. Best effort:
				// before Linux 4.2 bind picks the port.
				unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			}); err != nil {
				return err
			}
			return serr
		},
	}
	// DialTCP with addresses, not DialContext with a string: the daemon
	// never resolves a name, and leaving the resolver out keeps about
	// 100 KiB of DNS code out of the router binary.
	return dialer.DialTCP(ctx, "tcp4", netip.AddrPortFrom(local, 0), server)
}

// interfaceIPv4 returns the first IPv4 address of an interface.
func interfaceIPv4(name string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %s: %w", name, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", name)
}
