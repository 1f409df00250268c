// Package hdlc frames PPP packets the way a PPP peer writes them on a serial
// line or pty: asynchronous HDLC-like framing with flag sequences, control
// character escaping and a 16-bit frame check sequence (RFC 1662, sections 3,
// 4 and C.2).
//
// pptp-linux (--nolaunchpppd) and pptpd both speak this framing on the
// pppd side, so the lab uses it to push frames through real tunnels.
package hdlc

import (
	"bufio"
	"errors"
	"io"
)

const (
	flag   = 0x7e // frame delimiter (RFC 1662 section 4.1)
	escape = 0x7d // control escape (RFC 1662 section 4.2)
	xorBit = 0x20 // the escaped octet is XORed with this

	fcsInit = 0xffff // initial FCS value (RFC 1662 section C.2)
	fcsGood = 0xf0b8 // FCS over data plus its own FCS
)

// ErrFCS reports a frame whose frame check sequence did not match.
var ErrFCS = errors.New("hdlc: bad frame check sequence")

// FCS16 returns the frame check sequence for b, ready to be sent: the ones'
// complement of the CRC (RFC 1662 section C.2), also known as CRC-16/X-25.
func FCS16(b []byte) uint16 {
	return ^crc(fcsInit, b)
}

// crc runs the reflected CCITT polynomial (x^16 + x^12 + x^5 + 1, 0x8408
// bit-reversed) over b, one bit at a time. Frames in the lab are short, so a
// table buys nothing.
func crc(fcs uint16, b []byte) uint16 {
	for _, c := range b {
		fcs ^= uint16(c)
		for range 8 {
			if fcs&1 != 0 {
				fcs = fcs>>1 ^ 0x8408
			} else {
				fcs >>= 1
			}
		}
	}
	return fcs
}

// Encode returns frame (address and control fields, protocol, information)
// with its FCS appended, escaped with the default async control character map
// (every octet below 0x20, plus flag and escape) and wrapped in flags.
func Encode(frame []byte) []byte {
	fcs := FCS16(frame)
	out := make([]byte, 0, 2*len(frame)+6)
	put := func(c byte) {
		if c < 0x20 || c == flag || c == escape {
			out = append(out, escape, c^xorBit)
			return
		}
		out = append(out, c)
	}
	out = append(out, flag)
	for _, c := range frame {
		put(c)
	}
	// The FCS goes least significant octet first (RFC 1662 section C.2).
	put(byte(fcs))
	put(byte(fcs >> 8))
	return append(out, flag)
}

// A Decoder reads frames from an async HDLC byte stream.
type Decoder struct {
	r *bufio.Reader
}

// NewDecoder returns a Decoder reading from r.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: bufio.NewReader(r)}
}

// Next returns the next frame without its FCS. Empty frames (back to back
// flags) are skipped. A frame with a bad FCS is returned with ErrFCS so the
// caller can count it and go on reading. At the end of the stream Next returns
// io.EOF, dropping any unterminated frame.
func (d *Decoder) Next() ([]byte, error) {
	var frame []byte
	escaped := false
	for {
		c, err := d.r.ReadByte()
		if err != nil {
			return nil, err
		}
		switch {
		case c == flag:
			if len(frame) == 0 {
				escaped = false
				continue
			}
			if len(frame) < 3 || crc(fcsInit, frame) != fcsGood {
				return frame, ErrFCS
			}
			return frame[:len(frame)-2], nil
		case c == escape:
			escaped = true
		case escaped:
			frame = append(frame, c^xorBit)
			escaped = false
		default:
			frame = append(frame, c)
		}
	}
}
