package nat

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The attributes of NFT_MSG_NEWSETELEM dumps, as the kernel nests them, built
// with netlink's encoder so that they are right on either byte order.

type wireElem struct {
	key         []byte
	exprs       []string // expressions, by name; a counter gets pkts and bytes
	list        bool     // NFTA_SET_ELEM_EXPRESSIONS rather than NFTA_SET_ELEM_EXPR
	pkts, bytes uint64
	noPackets   bool // the counter lacks NFTA_COUNTER_PACKETS
}

func encodeExpr(ae *netlink.AttributeEncoder, e wireElem, name string) error {
	ae.String(unix.NFTA_EXPR_NAME, name)
	ae.Nested(unix.NFTA_EXPR_DATA, func(ae *netlink.AttributeEncoder) error {
		if name == "counter" {
			ae.Bytes(unix.NFTA_COUNTER_BYTES, binary.BigEndian.AppendUint64(nil, e.bytes))
			if !e.noPackets {
				ae.Bytes(unix.NFTA_COUNTER_PACKETS, binary.BigEndian.AppendUint64(nil, e.pkts))
			}
			ae.Bytes(3, make([]byte, 4)) // NFTA_COUNTER_PAD
		}
		return nil
	})
	return nil
}

func encodeElems(tb testing.TB, els ...wireElem) []byte {
	tb.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, "pptp_alg")
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, "gre_in")
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ae *netlink.AttributeEncoder) error {
		for _, e := range els {
			ae.Nested(unix.NFTA_LIST_ELEM, func(ae *netlink.AttributeEncoder) error {
				if e.key != nil {
					ae.Nested(unix.NFTA_SET_ELEM_KEY, func(ae *netlink.AttributeEncoder) error {
						ae.Bytes(unix.NFTA_DATA_VALUE, e.key)
						return nil
					})
				}
				ae.Nested(unix.NFTA_SET_ELEM_DATA, func(ae *netlink.AttributeEncoder) error {
					ae.Bytes(unix.NFTA_DATA_VALUE, make([]byte, 8))
					return nil
				})
				if !e.list {
					for _, name := range e.exprs {
						ae.Nested(unix.NFTA_SET_ELEM_EXPR, func(ae *netlink.AttributeEncoder) error {
							return encodeExpr(ae, e, name)
						})
					}
					return nil
				}
				ae.Nested(nftaSetElemExpressions, func(ae *netlink.AttributeEncoder) error {
					for _, name := range e.exprs {
						ae.Nested(unix.NFTA_LIST_ELEM, func(ae *netlink.AttributeEncoder) error {
							return encodeExpr(ae, e, name)
						})
					}
					return nil
				})
				return nil
			})
		}
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

type keyCounter struct {
	Key     string
	Counter Counter
}

func decodeAll(b []byte, keyLen int) ([]keyCounter, error) {
	var got []keyCounter
	err := decodeElements(b, keyLen, func(k []byte, c Counter) error {
		got = append(got, keyCounter{fmt.Sprintf("% x", k), c})
		return nil
	})
	return got, err
}

func TestDecodeElements(t *testing.T) {
	key := []byte{203, 0, 113, 2, 0x40, 0x01, 0, 0}
	tests := []struct {
		name string
		els  []wireElem
		want []keyCounter
		ok   bool
	}{
		{
			name: "counter",
			els:  []wireElem{{key: key, exprs: []string{"counter"}, pkts: 3, bytes: 300}},
			want: []keyCounter{{"cb 00 71 02 40 01 00 00", Counter{3, 300}}},
			ok:   true,
		},
		{
			name: "two elements, large counts",
			els: []wireElem{
				{key: key, exprs: []string{"counter"}},
				{key: []byte{1, 2, 3, 4, 0, 9, 0, 0}, exprs: []string{"counter"}, pkts: 1 << 40, bytes: 1<<63 + 1},
			},
			want: []keyCounter{
				{"cb 00 71 02 40 01 00 00", Counter{}},
				{"01 02 03 04 00 09 00 00", Counter{1 << 40, 1<<63 + 1}},
			},
			ok: true,
		},
		{
			name: "expression list",
			els:  []wireElem{{key: key, exprs: []string{"limit", "counter"}, list: true, pkts: 7, bytes: 70}},
			want: []keyCounter{{"cb 00 71 02 40 01 00 00", Counter{7, 70}}},
			ok:   true,
		},
		{name: "no elements", ok: true},
		{name: "no counter", els: []wireElem{{key: key, exprs: []string{"limit"}}}},
		{name: "no expression", els: []wireElem{{key: key}}},
		{name: "no key", els: []wireElem{{exprs: []string{"counter"}}}},
		{name: "short key", els: []wireElem{{key: key[:6], exprs: []string{"counter"}}}},
		{name: "counter without packets", els: []wireElem{{key: key, exprs: []string{"counter"}, noPackets: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAll(encodeElems(t, tt.els...), 8)
			if (err == nil) != tt.ok {
				t.Fatalf("decodeElements: %v, want ok %v", err, tt.ok)
			}
			if diff := cmp.Diff(tt.want, got); tt.ok && diff != "" {
				t.Errorf("elements (-want +got):\n%s", diff)
			}
		})
	}

	// Cut short anywhere, the attributes give an error or fewer elements,
	// never a wrong one.
	b := encodeElems(t, wireElem{key: key, exprs: []string{"counter"}, pkts: 3, bytes: 300})
	for n := range len(b) {
		got, _ := decodeAll(b[:n], 8)
		if len(got) > 0 {
			t.Errorf("%d of %d bytes gave %v", n, len(b), got)
		}
	}
}

func TestNextMessage(t *testing.T) {
	want := netlink.Header{Length: 21, Type: netlink.Done, Flags: netlink.Multi | netlink.DumpInterrupted, Sequence: 7, PID: 9}
	ne := binary.NativeEndian
	b := ne.AppendUint32(nil, want.Length)
	b = ne.AppendUint16(b, uint16(want.Type))
	b = ne.AppendUint16(b, uint16(want.Flags))
	b = ne.AppendUint32(b, want.Sequence)
	b = ne.AppendUint32(b, want.PID)
	b = append(b, 0, 0, 0, 0, 1) // the body
	b = append(b, 0, 0, 0)       // padding
	b = append(b, 0xff)          // the next message
	h, body, rest, err := nextMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if h != want || string(body) != "\x00\x00\x00\x00\x01" || string(rest) != "\xff" {
		t.Errorf("nextMessage = %+v, % x, % x; want %+v, 00 00 00 00 01, ff", h, body, rest, want)
	}
	for _, bad := range [][]byte{b[:15], b[:20]} {
		if _, _, _, err := nextMessage(bad); err == nil {
			t.Errorf("nextMessage(% x) gave no error", bad)
		}
	}
}

func FuzzDecodeElements(f *testing.F) {
	key := []byte{203, 0, 113, 2, 0x40, 0x01, 0, 0}
	f.Add(encodeElems(f, wireElem{key: key, exprs: []string{"counter"}, pkts: 3, bytes: 300}))
	f.Add(encodeElems(f, wireElem{key: key, exprs: []string{"limit", "counter"}, list: true}))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeAll(b, 8)
		if err != nil {
			return
		}
		for _, kc := range got {
			if len(kc.Key) != len("00 00 00 00 00 00 00 00") {
				t.Errorf("key %s, want 8 bytes", kc.Key)
			}
		}
	})
}
