package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/pptp-alg/pptp-alg/scripts/lab/hdlc"
)

func TestConfigureRequest(t *testing.T) {
	f := configureRequest()
	if !bytes.Equal(f[:6], []byte{0xff, 0x03, 0xc0, 0x21, 0x01, 0x01}) {
		t.Fatalf("header % x, want LCP Configure-Request id 1", f[:6])
	}
	if n := binary.BigEndian.Uint16(f[6:8]); int(n) != len(f)-4 {
		t.Fatalf("LCP length %d, packet is %d bytes", n, len(f)-4)
	}
}

// TestRun feeds pppecho a pipe: it writes its Configure-Request first, then
// everything it reads, unchanged.
func TestRun(t *testing.T) {
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	input := hdlc.Encode([]byte{0xff, 0x03, 0x00, 0x21, 0x7e, 0x7d, 0x00})
	inW.Write(input)
	inW.Close()
	if err := run(inR, &out); err != nil {
		t.Fatal(err)
	}
	got := out.Bytes()
	if !bytes.HasSuffix(got, input) {
		t.Fatalf("output % x does not end with the input % x", got, input)
	}
	first, err := hdlc.NewDecoder(bytes.NewReader(got[:len(got)-len(input)])).Next()
	if err != nil || !bytes.HasPrefix(first, []byte{0xff, 0x03, 0xc0, 0x21, 0x01}) {
		t.Fatalf("first frame % x, %v; want the Configure-Request", first, err)
	}
}
