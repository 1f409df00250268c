package alg

import "testing"

func BenchmarkFrame(b *testing.B) {
	// Two messages back to back, as the relay usually sees a segment.
	in := cat(benchMessage(b, "Outgoing-Call-Request"), echoRequest)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		n, err := Frame(in)
		if n == 0 || err != nil {
			b.Fatalf("Frame = %d, %v", n, err)
		}
	}
}

func BenchmarkParseOutgoingCallRequest(b *testing.B) {
	in := benchMessage(b, "Outgoing-Call-Request")
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := Parse(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendOutgoingCallReply(b *testing.B) {
	m := &OutgoingCallReply{CallID: 0xc001, PeerCallID: 0x1234, ResultCode: OutgoingCallResultConnected}
	buf := m.Append(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		buf = m.Append(buf[:0])
	}
}

func benchMessage(b *testing.B, name string) []byte {
	for _, tt := range validTests() {
		if tt.name == name {
			return tt.wire
		}
	}
	b.Fatalf("no test message %q", name)
	return nil
}
