package nat

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestElementBatchAsLibrary: the element messages elementBatch writes are
// those google/nftables writes for the same elements, byte for byte, in
// both tables' sets and maps, added and deleted, one element or several.
func TestElementBatchAsLibrary(t *testing.T) {
	cfg := Config{Table: DefaultTable}
	ip, fast := newObjects(cfg), newFastObjects(cfg)
	server, client := netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("192.168.1.10")
	in := nftables.SetElement{Key: inKey(server, 7), Val: inValue(client, 1)}
	in2 := nftables.SetElement{Key: inKey(server, 65535), Val: inValue(client, 2)}
	out := nftables.SetElement{Key: outKey(client, server, 40000), Val: []byte{203, 0, 113, 254}}
	call := nftables.SetElement{Key: inKey(server, 40000)}
	oif := nftables.SetElement{Key: []byte{192, 168, 1, 10}, Val: binary.NativeEndian.AppendUint32(nil, 3)}
	for _, tc := range []struct {
		name string
		add  bool
		set  *nftables.Set
		els  []nftables.SetElement
	}{
		{"add gre_in", true, ip.greIn, []nftables.SetElement{in}},
		{"add gre_in, two", true, ip.greIn, []nftables.SetElement{in, in2}},
		{"delete gre_in", false, ip.greIn, []nftables.SetElement{in}},
		{"add gre_calls (a set)", true, ip.greCalls, []nftables.SetElement{call}},
		{"delete gre_calls", false, ip.greCalls, []nftables.SetElement{call}},
		{"add gre_out", true, ip.greOut, []nftables.SetElement{out}},
		{"add netdev gre_in", true, fast.greIn, []nftables.SetElement{in, in2}},
		{"delete netdev gre_out", false, fast.greOut, []nftables.SetElement{out}},
		{"add netdev lan_oif", true, fast.lanOIF, []nftables.SetElement{oif}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := recordBatch(func(c *nftables.Conn) error {
				if tc.add {
					return c.SetAddElements(tc.set, tc.els)
				}
				return c.SetDeleteElements(tc.set, tc.els)
			})
			if err != nil {
				t.Fatal(err)
			}
			var b elementBatch
			if err := b.queue(tc.add, tc.set, tc.els); err != nil {
				t.Fatal(err)
			}
			batch, _, _ := b.frame(1)
			got := splitMessages(t, batch)
			if len(got) != 3 {
				t.Fatalf("%d messages; want begin, one, end", len(got))
			}
			g, w := got[1], want[0]
			if g.Header.Type != w.Header.Type || g.Header.Flags != w.Header.Flags || !bytes.Equal(g.Data, w.Data) {
				t.Errorf("message:\n got type %#x flags %v data % x\nwant type %#x flags %v data % x",
					g.Header.Type, g.Header.Flags, g.Data, w.Header.Type, w.Header.Flags, w.Data)
			}
			if g, w := got[0], batchMsg(unix.NFNL_MSG_BATCH_BEGIN); g.Header.Type != w.Header.Type || !bytes.Equal(g.Data, w.Data) {
				t.Errorf("begin: % x; want % x", g.Data, w.Data)
			}
			if g, w := got[2], batchMsg(unix.NFNL_MSG_BATCH_END); g.Header.Type != w.Header.Type || !bytes.Equal(g.Data, w.Data) {
				t.Errorf("end: % x; want % x", g.Data, w.Data)
			}
		})
	}
}

// TestElementBatchFrame: a batch's messages are numbered in order, only the
// last element message asks for an acknowledgement, and the batch is empty
// after; an empty batch frames to nothing.
func TestElementBatchFrame(t *testing.T) {
	o := newObjects(Config{Table: DefaultTable})
	var b elementBatch
	if batch, _, _ := b.frame(1); batch != nil {
		t.Fatalf("empty batch framed to % x", batch)
	}
	for round := range 2 { // the second reuses the buffer
		for id := range uint16(3) {
			el := nftables.SetElement{Key: inKey(netip.MustParseAddr("203.0.113.2"), id)}
			if err := b.queue(id != 1, o.greCalls, []nftables.SetElement{el}); err != nil {
				t.Fatal(err)
			}
		}
		batch, begin, last := b.frame(100)
		msgs := splitMessages(t, batch)
		if len(msgs) != 5 || begin != 100 || last != 103 {
			t.Fatalf("round %d: %d messages, begin %d, last %d; want 5, 100, 103", round, len(msgs), begin, last)
		}
		for i, m := range msgs {
			if m.Header.Sequence != uint32(100+i) {
				t.Errorf("round %d: message %d numbered %d", round, i, m.Header.Sequence)
			}
			if ack := m.Header.Flags&netlink.Acknowledge != 0; ack != (i == 3) {
				t.Errorf("round %d: message %d asks for an acknowledgement: %v", round, i, ack)
			}
		}
		if b.msgs != 0 || len(b.buf) != 0 {
			t.Fatalf("round %d: the batch holds %d messages after frame", round, b.msgs)
		}
	}
	if err := b.queue(true, o.greCalls, []nftables.SetElement{{Key: []byte{1}, Comment: "x"}}); err == nil {
		t.Error("an element with a comment was queued; want it refused")
	}
}

// splitMessages parses a batch as the kernel would read it, each message
// padded to a whole number of words.
func splitMessages(t *testing.T, b []byte) []netlink.Message {
	t.Helper()
	msgs, err := splitBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		if m.Header.Length%unix.NLMSG_ALIGNTO != 0 {
			t.Fatalf("message %d: length %d", i, m.Header.Length)
		}
	}
	return msgs
}
