package alg

import "testing"

// BenchmarkFrameStream frames a 4 KB read of back-to-back messages, as the
// relay does when a peer coalesces them: the framer's cost per message in
// a full buffer, ending on a partial message as a real read does.
func BenchmarkFrameStream(b *testing.B) {
	msgs := [][]byte{
		(&EchoRequest{Identifier: 1}).Append(nil),
		(&SetLinkInfo{PeerCallID: 7}).Append(nil),
		(&OutgoingCallReply{CallID: 9, PeerCallID: 3, ResultCode: OutgoingCallResultConnected}).Append(nil),
		(&CallClearRequest{CallID: 3}).Append(nil),
	}
	var buf []byte
	n := 0
	for i := 0; len(buf) < relayBufSize; i++ {
		buf = append(buf, msgs[i%len(msgs)]...)
		n++
	}
	buf = buf[:relayBufSize]
	n-- // the last one is cut short
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		got := 0
		for off := 0; ; got++ {
			m, err := Frame(buf[off:])
			if err != nil {
				b.Fatal(err)
			}
			if m == 0 {
				break
			}
			off += m
		}
		if got != n {
			b.Fatalf("framed %d messages, want %d", got, n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
}
