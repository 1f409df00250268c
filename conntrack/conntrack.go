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
	"time"

	"github.com/mdlayher/netlink"
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

// Tracker asks ctnetlink about single connections. It is safe for
// concurrent use.
type Tracker struct {
	mu sync.Mutex // one request at a time on the socket
	c  *netlink.Conn
}

// Open connects to ctnetlink.
func Open() (*Tracker, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	return &Tracker{c: c}, nil
}

// Close releases the netlink socket.
func (t *Tracker) Close() error { return t.c.Close() }

// requestTimeout bounds one lookup. The kernel answers at once (a hash
// lookup); this only keeps a wedged socket from holding a connection up.
const requestTimeout = 2 * time.Second

// Attributes of a conntrack message (linux/netfilter/nfnetlink_conntrack.h),
// which x/sys/unix lacks.
const (
	ipctnlMsgCtNew  = 0
	ipctnlMsgCtGet  = 1
	ctaTupleOrig    = 1
	ctaHelp         = 5
	ctaTupleIP      = 1
	ctaTupleProto   = 2
	ctaIPv4Src      = 1
	ctaIPv4Dst      = 2
	ctaProtoNum     = 1
	ctaProtoSrcPort = 2
	ctaProtoDstPort = 3
	ctaHelpName     = 1
)

// Helper returns the name of the conntrack helper on the TCP connection
// from src to dst (as the client sent it, before any NAT), or "" if it has
// none or conntrack has no entry for it.
//
// It asks for that one entry (IPCTNL_MSG_CT_GET), a hash lookup in the
// kernel, whatever the size of the table. go-conntrack's Get cannot be used:
// the kernel flags its reply NLM_F_MULTI with no NLMSG_DONE after it, and
// mdlayher/netlink's Receive waits for the DONE forever. So the reply is
// read here, one datagram at a time.
func (t *Tracker) Helper(src, dst netip.AddrPort) (string, error) {
	req, err := getRequest(src, dst)
	if err != nil {
		return "", fmt.Errorf("conntrack: get %v -> %v: %w", src, dst, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	reply, err := t.get(req)
	if errors.Is(err, unix.ENOENT) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("conntrack: get %v -> %v: %w", src, dst, err)
	}
	return helperName(reply)
}

// getRequest encodes the lookup of the TCP connection src -> dst by its
// original tuple.
func getRequest(src, dst netip.AddrPort) (netlink.Message, error) {
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if !s.Is4() || !d.Is4() {
		return netlink.Message{}, errors.New("not an IPv4 connection")
	}
	ip, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: ctaIPv4Src, Data: s.AsSlice()},
		{Type: ctaIPv4Dst, Data: d.AsSlice()},
	})
	if err != nil {
		return netlink.Message{}, err
	}
	proto, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: ctaProtoNum, Data: []byte{unix.IPPROTO_TCP}},
		{Type: ctaProtoSrcPort, Data: binary.BigEndian.AppendUint16(nil, src.Port())},
		{Type: ctaProtoDstPort, Data: binary.BigEndian.AppendUint16(nil, dst.Port())},
	})
	if err != nil {
		return netlink.Message{}, err
	}
	tuple, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NLA_F_NESTED | ctaTupleIP, Data: ip},
		{Type: unix.NLA_F_NESTED | ctaTupleProto, Data: proto},
	})
	if err != nil {
		return netlink.Message{}, err
	}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NLA_F_NESTED | ctaTupleOrig, Data: tuple},
	})
	if err != nil {
		return netlink.Message{}, err
	}
	return netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | ipctnlMsgCtGet),
			Flags: netlink.Request, // no ACK: the entry, or an error, is the answer
		},
		// nfgenmsg: family, version, resource ID
		Data: append([]byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}, nil
}

// get sends req and returns the reply that answers it: the entry's message,
// or the kernel's error (an errno). Replies to earlier requests that timed
// out are skipped by their sequence number. t.mu is held.
func (t *Tracker) get(req netlink.Message) (netlink.Message, error) {
	if err := t.c.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		return netlink.Message{}, err
	}
	sent, err := t.c.Send(req)
	if err != nil {
		return netlink.Message{}, err
	}
	raw, err := t.c.SyscallConn()
	if err != nil {
		return netlink.Message{}, err
	}
	buf := make([]byte, 4096) // an entry is a few hundred bytes
	for {
		var (
			n    int
			rerr error
		)
		// Read respects the deadline: it waits for the socket to be readable.
		err := raw.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			return rerr != unix.EAGAIN && rerr != unix.EWOULDBLOCK
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return netlink.Message{}, err
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return netlink.Message{}, errors.New("malformed netlink reply")
			}
			var m netlink.Message
			if err := m.UnmarshalBinary(b[:l]); err != nil {
				return netlink.Message{}, err
			}
			b = b[min(nlmsgAlign(l), len(b)):]
			if m.Header.Sequence != sent.Header.Sequence {
				continue
			}
			if m.Header.Type == netlink.Error {
				if len(m.Data) < 4 {
					return netlink.Message{}, errors.New("short netlink error")
				}
				if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return netlink.Message{}, unix.Errno(errno)
				}
				return netlink.Message{}, errors.New("acknowledged without an entry")
			}
			return m, nil
		}
	}
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// helperName reads CTA_HELP / CTA_HELP_NAME from a conntrack entry.
func helperName(m netlink.Message) (string, error) {
	if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtNew) || len(m.Data) < 4 {
		return "", fmt.Errorf("conntrack: unexpected reply type %#x", m.Header.Type)
	}
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return "", fmt.Errorf("conntrack: reply: %w", err)
	}
	var name string
	for ad.Next() {
		if ad.Type() == ctaHelp {
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if nad.Type() == ctaHelpName {
						name = nad.String()
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return "", fmt.Errorf("conntrack: reply: %w", err)
	}
	return name, nil
}
