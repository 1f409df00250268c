package main

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/pptp-alg/pptp-alg/alg"
)

var testMessages = []alg.Message{
	&alg.OutgoingCallRequest{CallID: 1, CallSerialNumber: 1},
	&alg.OutgoingCallRequest{CallID: 2, CallSerialNumber: 2},
	&alg.SetLinkInfo{PeerCallID: 100, SendACCM: 0xffffffff},
	&alg.CallClearRequest{CallID: 1},
}

func TestControlReader(t *testing.T) {
	var stream []byte
	for _, m := range testMessages {
		stream = m.Append(stream)
	}
	tests := []struct {
		name string
		r    io.Reader
	}{
		{"all at once", bytes.NewReader(stream)},
		{"a byte at a time", iotest.OneByteReader(bytes.NewReader(stream))},
		{"uneven", iotest.HalfReader(bytes.NewReader(stream))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newControlReader(tt.r)
			var got []alg.Message
			for {
				m, err := r.next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("next: %v", err)
				}
				got = append(got, m)
			}
			if diff := cmp.Diff(testMessages, got); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
		})
	}
}

func TestControlReaderBadStream(t *testing.T) {
	r := newControlReader(bytes.NewReader([]byte("GET / HTTP/1.1\r\n\r\n")))
	if _, err := r.next(); !errors.Is(err, alg.ErrBadLength) {
		t.Fatalf("next: got %v, want ErrBadLength", err)
	}
}

// writeLog records the size of every write.
type writeLog struct {
	sizes []int
	all   []byte
}

func (w *writeLog) Write(b []byte) (int, error) {
	w.sizes = append(w.sizes, len(b))
	w.all = append(w.all, b...)
	return len(b), nil
}

func TestControlWriter(t *testing.T) {
	var want []byte
	var lens []int
	for _, m := range testMessages {
		want = m.Append(want)
		lens = append(lens, m.Type().Len())
	}
	tests := []struct {
		mode  segmentMode
		check func(t *testing.T, sizes []int)
	}{
		{segmentNormal, func(t *testing.T, sizes []int) {
			if diff := cmp.Diff(lens, sizes); diff != "" {
				t.Errorf("write sizes (-want +got):\n%s", diff)
			}
		}},
		{segmentCoalesce, func(t *testing.T, sizes []int) {
			if diff := cmp.Diff([]int{len(want)}, sizes); diff != "" {
				t.Errorf("write sizes (-want +got):\n%s", diff)
			}
		}},
		{segmentSplit, func(t *testing.T, sizes []int) {
			// Every message is cut, first after its first byte.
			if len(sizes) < 4*len(testMessages) || sizes[0] != 1 {
				t.Errorf("write sizes %v: want many small writes, the first of 1 byte", sizes)
			}
			for _, n := range sizes {
				if n > 17 {
					t.Errorf("write of %d bytes in split mode", n)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			var w writeLog
			cw := newControlWriter(&w, tt.mode)
			pauses := 0
			cw.pause = func() { pauses++ }
			if err := cw.send(testMessages...); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(w.all, want) {
				t.Errorf("stream differs from the messages' wire form")
			}
			tt.check(t, w.sizes)
			if tt.mode == segmentSplit && pauses == 0 {
				t.Errorf("split mode never paused")
			}
		})
	}
}

func TestEmitter(t *testing.T) {
	var b bytes.Buffer
	e := &emitter{w: &b}
	e.emit("call", "z", 1, "a", nil, "s", "x\"y", "ok", true)
	e.emit("holding")
	want := `{"event":"call","z":1,"a":null,"s":"x\"y","ok":true}` + "\n" + `{"event":"holding"}` + "\n"
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}
