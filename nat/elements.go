package nat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Calls are set up and torn down by element batches alone, so these are put
// together here, into one buffer reused from batch to batch, and written to
// the socket as they are. google/nftables allocated some 12 KB a call to
// encode them (attribute lists, a message each, then a copy of each to send
// it), and the collector's work showed in every call's set-up. The messages
// are the ones google/nftables writes: TestElementBatchAsLibrary compares
// them byte for byte.

// elementBatch is an nf_tables batch of element additions and deletions.
type elementBatch struct {
	buf  []byte // the batch's begin message, then the queued messages
	msgs int    // messages queued
}

// queue queues the addition of els to s, or their deletion, as one
// message. Only keys and map values are encoded; an element with anything
// else is refused.
func (b *elementBatch) queue(add bool, s *nftables.Set, els []nftables.SetElement) error {
	for _, el := range els {
		if el.IntervalEnd || len(el.KeyEnd) > 0 || el.Timeout != 0 || el.VerdictData != nil || el.Comment != "" {
			return errors.New("nat: element batch: only keys and map values are encoded")
		}
	}
	if len(b.buf) == 0 {
		b.buf = appendBatchMsg(b.buf, unix.NFNL_MSG_BATCH_BEGIN)
	}
	typ := unix.NFT_MSG_DELSETELEM
	if add {
		typ = unix.NFT_MSG_NEWSETELEM
	}
	m := len(b.buf)
	b.buf = appendMsgHeader(b.buf, unix.NFNL_SUBSYS_NFTABLES<<8|typ, netlink.Request|netlink.Acknowledge|netlink.Create)
	b.buf = append(b.buf, byte(s.Table.Family), unix.NFNETLINK_V0, 0, 0)
	b.buf = appendAttrString(b.buf, unix.NFTA_SET_NAME, s.Name)
	b.buf = appendAttr(b.buf, unix.NFTA_LOOKUP_SET_ID, byte(s.ID>>24), byte(s.ID>>16), byte(s.ID>>8), byte(s.ID))
	b.buf = appendAttrString(b.buf, unix.NFTA_SET_TABLE, s.Table.Name)
	list := b.open(unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_LIST_ELEMENTS)
	for i, el := range els {
		item := b.open(unix.NLA_F_NESTED | uint16(i+1))
		key := b.open(unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_KEY)
		b.buf = appendAttr(b.buf, unix.NFTA_DATA_VALUE, el.Key...)
		b.close(key)
		if len(el.Val) > 0 {
			val := b.open(unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_DATA)
			b.buf = appendAttr(b.buf, unix.NFTA_DATA_VALUE, el.Val...)
			b.close(val)
		}
		b.close(item)
	}
	b.close(list)
	binary.NativeEndian.PutUint32(b.buf[m:], uint32(len(b.buf)-m))
	b.msgs++
	return nil
}

// open starts a nested attribute of type typ; close, given what open
// returned, sets its length.
func (b *elementBatch) open(typ uint16) int {
	at := len(b.buf)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, 0)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	return at
}

func (b *elementBatch) close(at int) {
	binary.NativeEndian.PutUint16(b.buf[at:], uint16(len(b.buf)-at))
}

// frame ends the batch and numbers its messages from seq on. Only the
// last element message asks for an acknowledgement: the kernel reports a
// failed message whether asked or not, in order, and the last one's
// acknowledgement comes after them all. It returns the batch, nil if
// nothing was queued, and the sequence numbers of its begin message and
// of that last message. The batch is emptied for the next; the bytes stay
// valid until the next queue.
func (b *elementBatch) frame(seq uint32) (batch []byte, begin, last uint32) {
	if b.msgs == 0 {
		b.reset()
		return nil, 0, 0
	}
	b.buf = appendBatchMsg(b.buf, unix.NFNL_MSG_BATCH_END)
	n := 0
	for off := 0; off < len(b.buf); n++ {
		h := b.buf[off:]
		binary.NativeEndian.PutUint32(h[8:], seq+uint32(n))
		if flags := binary.NativeEndian.Uint16(h[6:]); n > 0 && n < b.msgs {
			binary.NativeEndian.PutUint16(h[6:], flags&^uint16(netlink.Acknowledge))
		}
		off += int(binary.NativeEndian.Uint32(h))
	}
	batch = b.buf
	b.reset()
	return batch, seq, seq + uint32(n-2)
}

// reset drops what was queued.
func (b *elementBatch) reset() { b.buf, b.msgs = b.buf[:0], 0 }

func appendMsgHeader(b []byte, typ int, flags netlink.HeaderFlags) []byte {
	b = binary.NativeEndian.AppendUint32(b, 0) // length, set once known
	b = binary.NativeEndian.AppendUint16(b, uint16(typ))
	b = binary.NativeEndian.AppendUint16(b, uint16(flags))
	b = binary.NativeEndian.AppendUint32(b, 0) // sequence, set by frame
	return binary.NativeEndian.AppendUint32(b, 0)
}

// appendBatchMsg appends a batch's begin or end message, batchMsg.
func appendBatchMsg(b []byte, typ int) []byte {
	m := batchMsg(typ)
	at := len(b)
	b = append(appendMsgHeader(b, typ, m.Header.Flags), m.Data...)
	binary.NativeEndian.PutUint32(b[at:], uint32(len(b)-at))
	return b
}

// appendAttr appends an attribute, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, data ...byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.NLA_HDRLEN+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	return pad(append(b, data...))
}

// appendAttrString appends a NUL-terminated string attribute.
func appendAttrString(b []byte, typ uint16, s string) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.NLA_HDRLEN+len(s)+1))
	b = binary.NativeEndian.AppendUint16(b, typ)
	return pad(append(append(b, s...), 0))
}

func pad(b []byte) []byte {
	for len(b)%unix.NLA_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// sendElements sends a framed element batch on the lasting socket and
// reads the replies up to its last message's acknowledgement (readAcks).
// The first errno is returned.
func (c *nftConn) sendElements(b *elementBatch) error {
	batch, begin, last := b.frame(c.seq + 1)
	if batch == nil {
		return nil
	}
	c.seq = last + 1 // the end message's
	c.arm()
	raw, err := c.sock.SyscallConn()
	if err != nil {
		return c.sendElementsByMessage(batch)
	}
	var serr error
	if err := raw.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), batch, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("sendto", serr)
	}
	return c.readReplies(raw, begin, last)
}

// sendElementsByMessage hands the batch's messages one by one to a test's
// stand-in for the kernel (nftables.WithTestDial), which has no descriptor
// and answers a receive with one acknowledgement.
func (c *nftConn) sendElementsByMessage(batch []byte) error {
	msgs, err := splitBatch(batch)
	if err != nil {
		return err
	}
	if _, err := c.sock.SendMessages(msgs); err != nil {
		return err
	}
	_, err = c.sock.Receive()
	return err
}

// splitBatch parses a framed batch into its messages, each with a copy of
// its data: the batch's buffer is reused.
func splitBatch(b []byte) ([]netlink.Message, error) {
	var msgs []netlink.Message
	for len(b) > 0 {
		if len(b) < unix.NLMSG_HDRLEN {
			return nil, errors.New("nat: element batch: short message")
		}
		n := int(binary.NativeEndian.Uint32(b))
		if n < unix.NLMSG_HDRLEN || n > len(b) {
			return nil, fmt.Errorf("nat: element batch: message length %d of %d bytes left", n, len(b))
		}
		var m netlink.Message
		if err := m.UnmarshalBinary(b[:n]); err != nil {
			return nil, err
		}
		m.Data = bytes.Clone(m.Data)
		msgs = append(msgs, m)
		b = b[n:]
	}
	return msgs, nil
}
