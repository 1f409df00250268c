package hdlc

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFCS16(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want uint16
	}{
		// The standard check value of CRC-16/X-25, the FCS of RFC 1662.
		{name: "check string", in: []byte("123456789"), want: 0x906e},
		{name: "empty", in: nil, want: 0x0000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FCS16(tt.in); got != tt.want {
				t.Fatalf("FCS16(%q) = %#04x, want %#04x", tt.in, got, tt.want)
			}
		})
	}
}

func TestEncodeDecode(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		wire  []byte
	}{
		{
			// "123456789" has FCS 0x906e, sent low octet first.
			name:  "plain",
			frame: []byte("123456789"),
			wire:  append(append([]byte{0x7e}, "123456789"...), 0x6e, 0x90, 0x7e),
		},
		{
			// Flag, escape and control characters are escaped; so is
			// an FCS octet that happens to be one of them.
			name:  "escapes",
			frame: []byte{0x7e, 0x7d, 0x01, 0x41},
			wire: func() []byte {
				fcs := FCS16([]byte{0x7e, 0x7d, 0x01, 0x41})
				w := []byte{0x7e, 0x7d, 0x5e, 0x7d, 0x5d, 0x7d, 0x21, 0x41}
				for _, c := range []byte{byte(fcs), byte(fcs >> 8)} {
					if c < 0x20 || c == 0x7e || c == 0x7d {
						w = append(w, 0x7d, c^0x20)
					} else {
						w = append(w, c)
					}
				}
				return append(w, 0x7e)
			}(),
		},
		{
			name:  "lcp configure-request",
			frame: []byte{0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x04},
			wire: func() []byte {
				fcs := FCS16([]byte{0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x04})
				return []byte{0x7e, 0xff, 0x7d, 0x23, 0xc0, 0x21, 0x7d, 0x21, 0x7d, 0x21, 0x7d, 0x20, 0x7d, 0x24,
					byte(fcs), byte(fcs >> 8), 0x7e}
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.wire, Encode(tt.frame)); diff != "" {
				t.Fatalf("Encode (-want +got):\n%s", diff)
			}
			got, err := NewDecoder(bytes.NewReader(tt.wire)).Next()
			if err != nil {
				t.Fatalf("Next: %v", err)
			}
			if diff := cmp.Diff(tt.frame, got); diff != "" {
				t.Fatalf("Next (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecoderStream(t *testing.T) {
	bad := Encode([]byte("corrupt me"))
	bad[3] ^= 0x01
	var stream []byte
	stream = append(stream, 0x7e, 0x7e) // empty frames are skipped
	stream = append(stream, Encode([]byte("one"))...)
	stream = append(stream, bad...)
	stream = append(stream, Encode([]byte("two"))...)
	stream = append(stream, 0x41, 0x42) // unterminated tail

	d := NewDecoder(bytes.NewReader(stream))
	want := []struct {
		frame string
		err   error
	}{{"one", nil}, {"", ErrFCS}, {"two", nil}, {"", io.EOF}}
	for i, w := range want {
		got, err := d.Next()
		if !errors.Is(err, w.err) {
			t.Fatalf("frame %d: err %v, want %v", i, err, w.err)
		}
		if err == nil && string(got) != w.frame {
			t.Fatalf("frame %d: %q, want %q", i, got, w.frame)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode([]byte{0xff, 0x03, 0xc0, 0x21, 0x01, 0x01, 0x00, 0x04}))
	f.Add([]byte{0x7e, 0x7d, 0x7e, 0x7d})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := NewDecoder(bytes.NewReader(b))
		for {
			frame, err := d.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				continue
			}
			// A frame that decoded cleanly must survive a round trip.
			again, err := NewDecoder(bytes.NewReader(Encode(frame))).Next()
			if err != nil || !bytes.Equal(again, frame) {
				t.Fatalf("round trip of %x: got %x, %v", frame, again, err)
			}
		}
	})
}
