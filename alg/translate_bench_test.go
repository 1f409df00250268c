package alg

import (
	"strconv"
	"testing"
)

// BenchmarkTranslate measures the call-ID translation of one message in
// place, without sockets, on a connection that carries calls calls: a
// message for a call is matched by a search of the connection's calls.
func BenchmarkTranslate(b *testing.B) {
	for _, calls := range []int{1, 100, 1000} {
		tab := NewTable(newFakePlane(), Limits{ConnsPerClient: 2, CallsPerClient: 1 << 20, Calls: 1 << 20}, nil)
		// Another client holds the same IDs first, so this session's are
		// translated.
		first, _ := tab.OpenSession(hostB, server)
		s, _ := tab.OpenSession(hostA, server)
		var natID uint16
		for _, sess := range []*Session{first, s} {
			for id := range uint16(calls) {
				m := ocrq(id + 1)
				if _, _, err := sess.fromClient(m); err != nil {
					b.Fatal(err)
				}
				natID = get16(m, 12)
				if err := sess.fromServer(ocrp(30000+natID, natID, OutgoingCallResultConnected)); err != nil {
					b.Fatal(err)
				}
			}
		}
		// The last call, found last by the search.
		wen := (&WANErrorNotify{PeerCallID: natID}).Append(nil)
		b.Run("WAN-Error-Notify/calls="+strconv.Itoa(calls), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				put16(wen, 12, natID)
				if err := s.fromServer(wen); err != nil {
					b.Fatal(err)
				}
			}
			if got := get16(wen, 12); got != uint16(calls) {
				b.Fatalf("translated to %d, want %d", got, calls)
			}
		})
		echo := (&EchoRequest{Identifier: 1}).Append(nil)
		b.Run("Echo-Request/calls="+strconv.Itoa(calls), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if fwd, _, err := s.fromClient(echo); !fwd || err != nil {
					b.Fatal(fwd, err)
				}
			}
		})
	}
}
