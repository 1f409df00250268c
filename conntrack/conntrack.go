// Package conntrack is what pptp-alg asks of the kernel's connection
// tracker: where a redirected control connection was going, and whether a
// kernel helper (nf_conntrack_pptp) has been put on it. It is the only
// package that talks ctnetlink.
package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	ct "github.com/florianl/go-conntrack"
	"golang.org/x/sys/unix"
)

// OriginalDst returns the destination a connection had before the
// firewall redirected it to the relay.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, errors.New("original destination: not a socket")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	var (
		dst  netip.AddrPort
		oerr error
	)
	err = raw.Control(func(fd uintptr) {
		// SO_ORIGINAL_DST fills a sockaddr_in; the IPv6Mreq getter is the
		// x/sys way to read 16 raw bytes.
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			oerr = err
			return
		}
		b := m.Multiaddr
		port := binary.BigEndian.Uint16(b[2:4])
		dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
	})
	if err == nil {
		err = oerr
	}
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	return dst, nil
}

// Tracker queries the conntrack table.
type Tracker struct {
	mu   sync.Mutex // one request at a time on the socket
	nfct *ct.Nfct
}

// Open connects to ctnetlink.
func Open() (*Tracker, error) {
	nfct, err := ct.Open(&ct.Config{})
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	return &Tracker{nfct: nfct}, nil
}

// Close releases the netlink socket.
func (t *Tracker) Close() error { return t.nfct.Close() }

// Helper returns the name of the conntrack helper on the TCP connection
// from src to dst (as the client sent it), or "" if it has none.
//
// It walks a dump of the table: go-conntrack v0.6.0's Get never returns
// here (measured on kernel 6.18). This runs once per control connection,
// not per call or packet.
func (t *Tracker) Helper(src, dst netip.AddrPort) (string, error) {
	t.mu.Lock()
	cons, err := t.nfct.Dump(ct.Conntrack, ct.IPv4)
	t.mu.Unlock()
	if err != nil {
		return "", fmt.Errorf("conntrack: dump: %w", err)
	}
	for _, c := range cons {
		if matches(c.Origin, src, dst) {
			if c.Helper != nil && c.Helper.Name != nil {
				return *c.Helper.Name, nil
			}
			return "", nil
		}
	}
	return "", nil
}

func matches(tu *ct.IPTuple, src, dst netip.AddrPort) bool {
	if tu == nil || tu.Src == nil || tu.Dst == nil || tu.Proto == nil ||
		tu.Proto.Number == nil || *tu.Proto.Number != unix.IPPROTO_TCP ||
		tu.Proto.SrcPort == nil || tu.Proto.DstPort == nil {
		return false
	}
	s, _ := netip.AddrFromSlice(*tu.Src)
	d, _ := netip.AddrFromSlice(*tu.Dst)
	return s.Unmap() == src.Addr() && d.Unmap() == dst.Addr() &&
		*tu.Proto.SrcPort == src.Port() && *tu.Proto.DstPort == dst.Port()
}
