package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// InKey names a gre_in element.
type InKey struct {
	Server netip.Addr
	NATID  uint16
}

// OutKey names a gre_out element.
type OutKey struct {
	Client, Server netip.Addr
	ServerID       uint16
}

// Counter is what a per-element counter has seen: packets that hit the
// element in a lookup, and their bytes from the IP header on.
type Counter struct{ Packets, Bytes uint64 }

// errDumpInterrupted reports a set that changed while it was being dumped.
// The kernel resumes a dump by counting elements already sent, so an
// element added or deleted meanwhile can shift another out of the dump or
// into it twice.
var errDumpInterrupted = errors.New("set changed during the dump; read it again")

// Counters clears in and out (not nil) and fills them with the per-element
// counters of gre_in and gre_out, from one dump of each set. Passing the same
// maps again reuses their memory. On error both are left empty, never half
// read. Errors from the kernel keep their errno: unix.ENOENT means the table
// is gone.
//
// The daemon reads every call's counters every few seconds, so the dump is
// decoded as it arrives, from one reused buffer, keeping only each key and
// its counter: google/nftables' GetSetElements allocated 43.6 MB to read
// 10,000 calls.
func (p *Plane) Counters(in map[InKey]Counter, out map[OutKey]Counter) error {
	clear(in)
	clear(out)
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.dump.elements(unix.NFPROTO_IPV4, p.cfg.Table, mapGREIn, 8, func(k []byte, c Counter) error {
		key := inKeyOf(k)
		if _, dup := in[key]; dup {
			return errDumpInterrupted
		}
		in[key] = c
		return nil
	})
	if err != nil {
		clear(in)
		return fmt.Errorf("nat: list map ip %s %s: %w", p.cfg.Table, mapGREIn, err)
	}
	err = p.dump.elements(unix.NFPROTO_IPV4, p.cfg.Table, setGREOut, 12, func(k []byte, c Counter) error {
		key := outKeyOf(k)
		if _, dup := out[key]; dup {
			return errDumpInterrupted
		}
		out[key] = c
		return nil
	})
	if err != nil {
		clear(in)
		clear(out)
		return fmt.Errorf("nat: list set ip %s %s: %w", p.cfg.Table, setGREOut, err)
	}
	if p.fast.on {
		p.addFastCounters(in, out)
	}
	return nil
}

// addFastCounters adds the fast path's counters to those of the same calls
// in the ip table: a call's GRE goes one way or the other. Its elements
// that the ip table lacks are left out, so that in and out say what the ip
// table holds. A dump that fails (the set changed meanwhile, or the table
// is gone: CheckFastPath sees to that) leaves counts out until the next:
// what idle checks need is that a call's counts grow while it is in use.
func (p *Plane) addFastCounters(in map[InKey]Counter, out map[OutKey]Counter) {
	_ = p.dump.elements(unix.NFPROTO_NETDEV, p.cfg.Table, mapGREIn, 8, func(k []byte, c Counter) error {
		if sum, ok := in[inKeyOf(k)]; ok {
			in[inKeyOf(k)] = sum.add(c)
		}
		return nil
	})
	_ = p.dump.elements(unix.NFPROTO_NETDEV, p.cfg.Table, setGREOut, 12, func(k []byte, c Counter) error {
		if sum, ok := out[outKeyOf(k)]; ok {
			out[outKeyOf(k)] = sum.add(c)
		}
		return nil
	})
}

func (c Counter) add(d Counter) Counter { return Counter{c.Packets + d.Packets, c.Bytes + d.Bytes} }

// inKeyOf and outKeyOf decode gre_in and gre_out keys.
func inKeyOf(k []byte) InKey {
	return InKey{Server: netip.AddrFrom4([4]byte(k[0:4])), NATID: binary.BigEndian.Uint16(k[4:6])}
}

func outKeyOf(k []byte) OutKey {
	return OutKey{
		Client:   netip.AddrFrom4([4]byte(k[0:4])),
		Server:   netip.AddrFrom4([4]byte(k[4:8])),
		ServerID: binary.BigEndian.Uint16(k[8:10]),
	}
}

// dumper dumps sets on a netlink socket of its own, in the Plane's network
// namespace. google/nftables keeps its socket to itself.
type dumper struct {
	netns int           // as nftables.WithNetNSFd gave it; 0 for our own
	conn  *netlink.Conn // nil until the first dump, and after an error
	buf   []byte        // one datagram
}

// dumpBufSize holds any datagram of a dump: the kernel fills at most 32 KiB
// (less its skb overhead) per read, and only that much when the reader's
// buffer is as large.
const dumpBufSize = 32 << 10

// elements dumps set (of family ip or netdev) and calls fn with each element's key,
// keyLen bytes, and counter. A key is valid only during its call. After any
// error the socket is closed, as replies may be left unread that the next
// dump would take for its own; the next dump opens another.
func (d *dumper) elements(family byte, table, set string, keyLen int, fn func(key []byte, c Counter) error) error {
	if d.conn == nil {
		c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: d.netns})
		if err != nil {
			return err
		}
		d.conn = c
	}
	if d.buf == nil {
		d.buf = make([]byte, dumpBufSize)
	}
	// The whole dump, however many datagrams, within the deadline.
	err := d.conn.SetDeadline(time.Now().Add(replyTimeout))
	if err == nil {
		err = d.read(family, table, set, keyLen, fn)
	}
	if err != nil {
		d.conn.Close()
		d.conn = nil
	}
	return err
}

// close closes the socket, if one is open.
func (d *dumper) close() {
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
}

func (d *dumper) read(family byte, table, set string, keyLen int, fn func([]byte, Counter) error) error {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(table + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(set + "\x00")},
	})
	if err != nil {
		return err
	}
	req, err := d.conn.Send(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump,
		},
		// struct nfgenmsg, then the attributes
		Data: append([]byte{family, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return err
	}
	rc, err := d.conn.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var rerr error
	recv := func(fd uintptr) bool {
		// MSG_TRUNC: n is the datagram's length even if d.buf is shorter.
		n, _, rerr = unix.Recvfrom(int(fd), d.buf, unix.MSG_TRUNC)
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	}
	gen := -1 // the ruleset generation the dump began in
	for {
		if err := rc.Read(recv); err != nil {
			return err
		}
		if rerr != nil {
			return os.NewSyscallError("recvfrom", rerr)
		}
		if n > len(d.buf) {
			return fmt.Errorf("datagram of %d bytes, more than %d", n, len(d.buf))
		}
		for b := d.buf[:n]; len(b) > 0; {
			var h netlink.Header
			var body []byte
			h, body, b, err = nextMessage(b)
			if err != nil {
				return err
			}
			if h.Sequence != req.Header.Sequence || h.PID != req.Header.PID {
				return fmt.Errorf("reply %d to port %d, want %d to %d", h.Sequence, h.PID, req.Header.Sequence, req.Header.PID)
			}
			if h.Flags&netlink.DumpInterrupted != 0 {
				return errDumpInterrupted
			}
			switch h.Type {
			case netlink.Error, netlink.Done:
				// Both start with an errno; the Done of a good dump says 0.
				if len(body) < 4 {
					return errors.New("short netlink error message")
				}
				if e := -int32(binary.NativeEndian.Uint32(body)); e != 0 {
					return unix.Errno(e)
				}
				if h.Type == netlink.Error {
					return errors.New("acknowledgement in place of a dump")
				}
				return nil
			case netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM):
				if len(body) < 4 {
					return errors.New("short nfgenmsg")
				}
				// Each part carries the low 16 bits of the ruleset's
				// generation, which every commit advances. The kernel sets
				// no NLM_F_DUMP_INTR on set element dumps.
				g := int(binary.BigEndian.Uint16(body[2:4]))
				if gen >= 0 && g != gen {
					return errDumpInterrupted
				}
				gen = g
				if err := decodeElements(body[4:], keyLen, fn); err != nil {
					return err
				}
			default:
				return fmt.Errorf("unexpected netlink message type %#x", h.Type)
			}
		}
	}
}

// nextMessage splits the first netlink message off b.
func nextMessage(b []byte) (h netlink.Header, body, rest []byte, err error) {
	if len(b) < unix.NLMSG_HDRLEN {
		return h, nil, nil, fmt.Errorf("netlink message of %d bytes", len(b))
	}
	n := int(binary.NativeEndian.Uint32(b[0:4]))
	if n < unix.NLMSG_HDRLEN || n > len(b) {
		return h, nil, nil, fmt.Errorf("netlink message length %d in %d bytes", n, len(b))
	}
	h = netlink.Header{
		Length:   uint32(n),
		Type:     netlink.HeaderType(binary.NativeEndian.Uint16(b[4:6])),
		Flags:    netlink.HeaderFlags(binary.NativeEndian.Uint16(b[6:8])),
		Sequence: binary.NativeEndian.Uint32(b[8:12]),
		PID:      binary.NativeEndian.Uint32(b[12:16]),
	}
	return h, b[unix.NLMSG_HDRLEN:n], b[min(align4(n), len(b)):], nil
}

// nextAttr splits the first netlink attribute off b: its type without the
// nested and byte-order flags, its payload, and what follows.
func nextAttr(b []byte) (typ uint16, v, rest []byte, err error) {
	if len(b) < 4 {
		return 0, nil, nil, fmt.Errorf("netlink attribute of %d bytes", len(b))
	}
	n := int(binary.NativeEndian.Uint16(b[0:2]))
	if n < 4 || n > len(b) {
		return 0, nil, nil, fmt.Errorf("netlink attribute length %d in %d bytes", n, len(b))
	}
	typ = binary.NativeEndian.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
	return typ, b[4:n], b[min(align4(n), len(b)):], nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// nftaSetElemExpressions is NFTA_SET_ELEM_EXPRESSIONS from
// linux/netfilter/nf_tables.h, which x/sys/unix lacks. (google/nftables
// v0.3.0 gives it as 0x11; the header's enum makes it 11.)
const nftaSetElemExpressions = 11

// decodeElements calls fn with the key and counter of each element in the
// attributes of one NFT_MSG_NEWSETELEM message.
func decodeElements(b []byte, keyLen int, fn func([]byte, Counter) error) error {
	for len(b) > 0 {
		typ, list, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		if typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue // the table and set names
		}
		for len(list) > 0 {
			typ, el, rest, err := nextAttr(list)
			if err != nil {
				return err
			}
			list = rest
			if typ != unix.NFTA_LIST_ELEM {
				continue
			}
			key, c, err := decodeElement(el)
			if err != nil {
				return err
			}
			if len(key) != keyLen {
				return fmt.Errorf("key of %d bytes, want %d", len(key), keyLen)
			}
			if err := fn(key, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeElement returns the key and counter of one element. The kernel
// dumps an element's one expression as NFTA_SET_ELEM_EXPR, and several as a
// list in NFTA_SET_ELEM_EXPRESSIONS.
func decodeElement(b []byte) (key []byte, c Counter, err error) {
	found := false
	for len(b) > 0 {
		typ, v, rest, err := nextAttr(b)
		if err != nil {
			return nil, c, err
		}
		b = rest
		switch typ {
		case unix.NFTA_SET_ELEM_KEY:
			if key, err = dataValue(v); err != nil {
				return nil, c, err
			}
		case unix.NFTA_SET_ELEM_EXPR:
			if err := counterOf(v, &c, &found); err != nil {
				return nil, c, err
			}
		case nftaSetElemExpressions:
			for len(v) > 0 {
				typ, e, r, err := nextAttr(v)
				if err != nil {
					return nil, c, err
				}
				v = r
				if typ != unix.NFTA_LIST_ELEM {
					continue
				}
				if err := counterOf(e, &c, &found); err != nil {
					return nil, c, err
				}
			}
		}
	}
	if key == nil {
		return nil, c, errors.New("element without a key")
	}
	if !found {
		return nil, c, errors.New("element without a counter")
	}
	return key, c, nil
}

// dataValue returns the NFTA_DATA_VALUE inside a struct nft_data nest.
func dataValue(b []byte) ([]byte, error) {
	for len(b) > 0 {
		typ, v, rest, err := nextAttr(b)
		if err != nil {
			return nil, err
		}
		if typ == unix.NFTA_DATA_VALUE {
			return v, nil
		}
		b = rest
	}
	return nil, errors.New("key without a value")
}

// counterOf reads an expression's attributes and, if it is a counter, sets
// c and found.
func counterOf(b []byte, c *Counter, found *bool) error {
	var name, data []byte
	for len(b) > 0 {
		typ, v, rest, err := nextAttr(b)
		if err != nil {
			return err
		}
		b = rest
		switch typ {
		case unix.NFTA_EXPR_NAME:
			name = v
		case unix.NFTA_EXPR_DATA:
			data = v
		}
	}
	if string(name) != "counter\x00" {
		return nil
	}
	var got Counter
	var seen int
	for len(data) > 0 {
		typ, v, rest, err := nextAttr(data)
		if err != nil {
			return err
		}
		data = rest
		if typ != unix.NFTA_COUNTER_BYTES && typ != unix.NFTA_COUNTER_PACKETS {
			continue // padding
		}
		if len(v) != 8 {
			return fmt.Errorf("counter value of %d bytes", len(v))
		}
		if typ == unix.NFTA_COUNTER_BYTES {
			got.Bytes = binary.BigEndian.Uint64(v)
		} else {
			got.Packets = binary.BigEndian.Uint64(v)
		}
		seen |= 1 << typ
	}
	if seen != 1<<unix.NFTA_COUNTER_BYTES|1<<unix.NFTA_COUNTER_PACKETS {
		return errors.New("counter without its packets or bytes")
	}
	*c, *found = got, true
	return nil
}
