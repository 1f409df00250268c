package alg

import (
	"errors"
	"testing"
)

var echoRequest = h("0010 0001 1a2b3c4d 0005 0000 deadbeef")

func TestFrame(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		n    int
		err  error
	}{
		{name: "empty", in: nil},
		{name: "one byte", in: h("00")},
		{name: "partial magic", in: h("0010 0001 1a2b")},
		{name: "partial header", in: h("0010 0001 1a2b3c4d 0005 00")},
		{name: "header only", in: h("0010 0001 1a2b3c4d 0005 0000")},
		{name: "partial body", in: h("0010 0001 1a2b3c4d 0005 0000 deadbe")},
		{name: "exact", in: echoRequest, n: 16},
		{name: "two messages", in: cat(echoRequest, h("0014 0001 1a2b3c4d 0006 0000 deadbeef 01 00 0000")), n: 16},
		{name: "message and part of the next", in: cat(echoRequest, h("00")), n: 16},
		{name: "reserved set", in: h("0010 0001 1a2b3c4d 0005 ffff deadbeef"), n: 16},

		// Errors are reported from the first byte that proves them.
		{name: "length of 256 or more", in: h("01"), err: ErrBadLength},
		{name: "length of no message", in: h("0011"), err: ErrBadLength},
		{name: "length below header", in: h("0000"), err: ErrBadLength},
		{name: "PPTP type high byte", in: h("0010 01"), err: ErrNotControl},
		{name: "management message", in: h("0010 0002"), err: ErrNotControl},
		{name: "magic first byte", in: h("0010 0001 1b"), err: ErrBadMagic},
		{name: "magic last byte", in: h("0010 0001 1a2b3c4e"), err: ErrBadMagic},
		{name: "type high byte", in: h("0010 0001 1a2b3c4d 01"), err: ErrUnknownType},
		{name: "type 0", in: h("0010 0001 1a2b3c4d 0000"), err: ErrUnknownType},
		{name: "type 16", in: h("0010 0001 1a2b3c4d 0010"), err: ErrUnknownType},
		{name: "length of another type", in: h("009c 0001 1a2b3c4d 0005"), err: ErrBadLength},
		{name: "first field wins", in: h("0011 0002 00000000 0063"), err: ErrBadLength},
		{name: "HTTP", in: []byte("GET / HTTP/1.1\r\n"), err: ErrBadLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Frame(tt.in)
			if n != tt.n || err != tt.err {
				t.Errorf("Frame = %d, %v; want %d, %v", n, err, tt.n, tt.err)
			}
		})
	}
}

// Every prefix of a valid message is incomplete, not wrong. The prefix is
// copied into a buffer whose spare capacity holds a bad magic cookie, so a
// read past len(b) would show.
func TestFramePrefixes(t *testing.T) {
	for _, tt := range validTests() {
		for k := range len(tt.wire) {
			buf := make([]byte, k, len(tt.wire)+8)
			copy(buf, tt.wire)
			copy(buf[k:cap(buf)], cat(h("ffffffff ffffffff ffffffff"), make([]byte, len(tt.wire))))
			if n, err := Frame(buf); n != 0 || err != nil {
				t.Errorf("%s: Frame(first %d bytes) = %d, %v; want 0, nil", tt.name, k, n, err)
			}
		}
		if n, err := Frame(tt.wire); n != len(tt.wire) || err != nil {
			t.Errorf("%s: Frame = %d, %v; want %d, nil", tt.name, n, err, len(tt.wire))
		}
	}
}

func TestFrameDoesNotAllocate(t *testing.T) {
	for _, in := range [][]byte{echoRequest, echoRequest[:5], h("0010 0001 1b"), h("0010 0001 1a2b3c4d 0010")} {
		if allocs := testing.AllocsPerRun(100, func() { Frame(in) }); allocs != 0 {
			t.Errorf("Frame(%x) allocates %v times", in, allocs)
		}
	}
}

func FuzzFrame(f *testing.F) {
	for _, tt := range validTests() {
		f.Add(tt.wire)
		f.Add(tt.wire[:len(tt.wire)/2])
	}
	f.Add(cat(echoRequest, echoRequest[:7]))
	f.Add(h("0010 0001 1a2b3c4e"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := Frame(b)
		switch {
		case err != nil && n != 0:
			t.Fatalf("Frame = %d, %v: an error must come with 0", n, err)
		case n < 0 || n > len(b):
			t.Fatalf("Frame = %d for %d bytes", n, len(b))
		}
		if n > 0 {
			if _, err := Parse(b[:n]); err != nil {
				t.Fatalf("Frame = %d, but Parse of those bytes: %v", n, err)
			}
			for k := range n {
				if kn, kerr := Frame(b[:k]); kn != 0 || kerr != nil {
					t.Fatalf("Frame(first %d of a %d-byte message) = %d, %v; want 0, nil", k, n, kn, kerr)
				}
			}
		}
		if n == 0 && err == nil {
			// Incomplete: the header, or the message it announces, runs past b.
			if len(b) >= HeaderLen && len(b) >= MessageType(b[9]).Len() {
				t.Fatalf("Frame = 0, nil for %d bytes starting a whole message: %x", len(b), b)
			}
		}
		// An error is final: more bytes cannot take it back.
		for k := range min(len(b), HeaderLen) {
			if _, kerr := Frame(b[:k]); kerr != nil && !errors.Is(err, kerr) {
				t.Fatalf("Frame(first %d bytes) = %v, but Frame of all %d = %v", k, kerr, len(b), err)
			}
		}
	})
}
