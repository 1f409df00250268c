package main

import (
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialSharesSourcePort: with one local port to choose from, the relay
// still dials two servers from its bound address, since connect, not bind,
// picks the port and a port is free per server. Without
// IP_BIND_ADDRESS_NO_PORT the second bind finds the one port taken.
func TestDialSharesSourcePort(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a network namespace of its own and SO_MARK")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread stays in the namespace and exits with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		dialTwoServers(t)
	}()
	<-done
}

func dialTwoServers(t *testing.T) {
	// Bring lo up in the new namespace, and leave one local port.
	if err := loopbackUp(); err != nil {
		t.Errorf("lo up: %v", err)
		return
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_port_range", []byte("40000 40000"), 0o644); err != nil {
		t.Errorf("port range: %v", err)
		return
	}
	local := netip.MustParseAddr("127.0.0.1")
	r := hostRouter{mark: 0x10}
	for _, port := range []uint16{1723, 1724} {
		ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, port)))
		if err != nil {
			t.Error(err)
			return
		}
		defer ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := r.Dial(ctx, local, netip.AddrPortFrom(local, port))
		cancel()
		if err != nil {
			t.Errorf("dial server on port %d: %v", port, err)
			return
		}
		defer c.Close()
		if got := c.LocalAddr().(*net.TCPAddr).Port; got != 40000 {
			t.Errorf("dial server on port %d: from port %d, want 40000", port, got)
		}
	}
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_LOOPBACK | unix.IFF_RUNNING)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
