package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// route is where the kernel sends an IPv4 packet to dst: out of the
// interface with index OIF, to the neighbour Via (the gateway, or dst itself
// when dst is on a connected network).
type route struct {
	OIF int
	Via netip.Addr
}

// link is an interface's index and MTU.
type link struct{ Index, MTU int }

// rtmsgLen and ifinfomsgLen are the sizes of struct rtmsg and struct
// ifinfomsg, which start the body of every route and link message.
const (
	rtmsgLen     = 12
	ifinfomsgLen = 16
)

// lookupRoute asks the kernel for the route to dst, as `ip route get` does,
// in the network namespace netns (an fd; 0 for our own). Errors from the
// kernel keep their errno: unix.ENETUNREACH when no route matches,
// unix.EHOSTUNREACH for an unreachable route. A route that is not unicast
// (dst is local, a broadcast address, multicast) is an error too.
func lookupRoute(netns int, dst netip.Addr) (route, error) {
	if !dst.Is4() {
		return route{}, fmt.Errorf("nat: route to %v: not an IPv4 address", dst)
	}
	a := dst.As4()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.RTA_DST, Data: a[:]}})
	if err != nil {
		return route{}, err
	}
	// struct rtmsg: family, dst_len, then zeros.
	req := append([]byte{unix.AF_INET, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, attrs...)
	msgs, err := rtExecute(netns, unix.RTM_GETROUTE, 0, req)
	if err != nil {
		return route{}, fmt.Errorf("nat: route to %v: %w", dst, err)
	}
	r, err := decodeRoute(msgs, dst)
	if err != nil {
		return route{}, fmt.Errorf("nat: route to %v: %w", dst, err)
	}
	return r, nil
}

func decodeRoute(msgs []netlink.Message, dst netip.Addr) (route, error) {
	if len(msgs) != 1 || msgs[0].Header.Type != unix.RTM_NEWROUTE || len(msgs[0].Data) < rtmsgLen {
		return route{}, errors.New("unexpected reply")
	}
	b := msgs[0].Data
	if t := b[7]; t != unix.RTN_UNICAST {
		return route{}, fmt.Errorf("route of type %d, not unicast", t)
	}
	r := route{Via: dst}
	for b = b[rtmsgLen:]; len(b) > 0; {
		typ, v, rest, err := nextAttr(b)
		if err != nil {
			return route{}, err
		}
		b = rest
		switch {
		case typ == unix.RTA_OIF && len(v) == 4:
			r.OIF = int(binary.NativeEndian.Uint32(v))
		case typ == unix.RTA_GATEWAY && len(v) == 4:
			r.Via = netip.AddrFrom4([4]byte(v))
		}
	}
	if r.OIF == 0 {
		return route{}, errors.New("route without an output interface")
	}
	return r, nil
}

// lookupLink returns the index and MTU of the interface named name in netns.
// A missing interface is an error wrapping unix.ENODEV.
func lookupLink(netns int, name string) (link, error) {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.IFLA_IFNAME, Data: []byte(name + "\x00")}})
	if err != nil {
		return link{}, err
	}
	// struct ifinfomsg, all zero: any family, the index left to the name.
	req := append(make([]byte, ifinfomsgLen), attrs...)
	msgs, err := rtExecute(netns, unix.RTM_GETLINK, 0, req)
	if err != nil {
		return link{}, fmt.Errorf("nat: link %s: %w", name, err)
	}
	if len(msgs) != 1 || msgs[0].Header.Type != unix.RTM_NEWLINK || len(msgs[0].Data) < ifinfomsgLen {
		return link{}, fmt.Errorf("nat: link %s: unexpected reply", name)
	}
	b := msgs[0].Data
	l := link{Index: int(int32(binary.NativeEndian.Uint32(b[4:8])))}
	for b = b[ifinfomsgLen:]; len(b) > 0; {
		typ, v, rest, err := nextAttr(b)
		if err != nil {
			return link{}, fmt.Errorf("nat: link %s: %w", name, err)
		}
		b = rest
		if typ == unix.IFLA_MTU && len(v) == 4 {
			l.MTU = int(binary.NativeEndian.Uint32(v))
		}
	}
	if l.MTU == 0 {
		return link{}, fmt.Errorf("nat: link %s: no MTU in the reply", name)
	}
	return l, nil
}

// routesDigest returns a digest of the IPv4 routes of all tables in netns.
// It changes when a route changes in a way that could change an answer of
// lookupRoute, and stays the same while nothing changes. The kernel dumps
// routes in a stable order, so they are hashed in that order.
func routesDigest(netns int) (uint64, error) {
	req := []byte{unix.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // struct rtmsg
	msgs, err := rtExecute(netns, unix.RTM_GETROUTE, netlink.Dump, req)
	if err != nil {
		return 0, fmt.Errorf("nat: dump routes: %w", err)
	}
	h := fnv.New64a()
	var tl [4]byte
	for _, m := range msgs {
		if m.Header.Flags&netlink.DumpInterrupted != 0 {
			return 0, errors.New("nat: dump routes: routes changed during the dump")
		}
		if m.Header.Type != unix.RTM_NEWROUTE {
			continue
		}
		if len(m.Data) < rtmsgLen {
			return 0, errors.New("nat: dump routes: short rtmsg")
		}
		// The whole rtmsg: prefix length, table, type, scope, protocol,
		// and flags such as RTNH_F_DEAD, which take a route out of use.
		h.Write(m.Data[:rtmsgLen])
		for b := m.Data[rtmsgLen:]; len(b) > 0; {
			typ, v, rest, err := nextAttr(b)
			if err != nil {
				return 0, fmt.Errorf("nat: dump routes: %w", err)
			}
			b = rest
			switch typ {
			case unix.RTA_DST, unix.RTA_GATEWAY, unix.RTA_OIF, unix.RTA_PRIORITY,
				unix.RTA_TABLE, unix.RTA_MULTIPATH, unix.RTA_PREFSRC:
				// Others, such as RTA_CACHEINFO, may change on their own.
				binary.NativeEndian.PutUint16(tl[0:2], typ)
				binary.NativeEndian.PutUint16(tl[2:4], uint16(len(v)))
				h.Write(tl[:])
				h.Write(v)
			}
		}
		h.Write([]byte{0, 0, 0, 0}) // RTA_UNSPEC, which no route carries, ends each one
	}
	return h.Sum64(), nil
}

// rtExecute sends one rtnetlink request on a socket of its own in netns and
// returns the replies: one message, or all parts of a dump.
func rtExecute(netns int, typ netlink.HeaderType, flags netlink.HeaderFlags, data []byte) ([]netlink.Message, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(replyTimeout)); err != nil {
		return nil, err
	}
	return c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | flags},
		Data:   data,
	})
}
