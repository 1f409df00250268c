// Command pppecho stands in for pppd under pptpd (Poptop): pptpd starts the
// program named by "ppp" in its config with the call's pty on stdin and
// stdout, and pptpd forwards nothing from the tunnel until that side has
// written something. pppecho writes one LCP Configure-Request (RFC 1661
// section 5.1) in async HDLC framing (RFC 1662) and then echoes every byte it
// reads, which turns each call into a loopback.
//
// pptpd passes pppd options as arguments; pppecho ignores them.
package main

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/scripts/lab/hdlc"
)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pppecho:", err)
		os.Exit(1)
	}
}

func run(in *os.File, out io.Writer) error {
	if err := makeRaw(int(in.Fd())); err != nil {
		return err
	}
	if _, err := out.Write(hdlc.Encode(configureRequest())); err != nil {
		return fmt.Errorf("write configure-request: %w", err)
	}
	// A pty whose other side closed reads EIO; either way the call is over.
	_, err := io.Copy(out, in)
	if err != nil && !errors.Is(err, unix.EIO) {
		return fmt.Errorf("echo: %w", err)
	}
	return nil
}

// configureRequest returns an LCP Configure-Request with one option, a random
// Magic-Number (RFC 1661 section 6.4), as pppd would send first.
func configureRequest() []byte {
	var magic [4]byte
	rand.Read(magic[:])
	f := []byte{
		0xff, 0x03, // address, control
		0xc0, 0x21, // protocol: LCP
		0x01, 0x01, // code: Configure-Request, identifier
		0x00, 0x0a, // length
		0x05, 0x06, // option: Magic-Number, length
	}
	f = append(f, magic[:]...)
	binary.BigEndian.PutUint16(f[6:8], uint16(len(f)-4))
	return f
}

// makeRaw turns off line discipline processing on fd if it is a terminal, so
// bytes pass through the pty unchanged (no echo, no CR/LF mapping, 8 bits).
func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil // not a terminal: a pipe needs no setup
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP |
		unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("set raw mode: %w", err)
	}
	return nil
}
