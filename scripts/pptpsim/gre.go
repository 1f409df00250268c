package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
)

// Enhanced GRE header (RFC 2637 section 4.1).
const (
	greBaseLen  = 8      // flags and version, protocol, payload length, call ID
	greProtoPPP = 0x880B // the Protocol Type of enhanced GRE

	greChecksum = 0x8000 // C: must be 0 in enhanced GRE
	greRouting  = 0x4000 // R: must be 0 in enhanced GRE
	greKey      = 0x2000 // K: must be 1; the key holds payload length and call ID
	greSeq      = 0x1000 // S: a sequence number follows the base header
	greAck      = 0x0080 // A: an acknowledgment number follows
	greVerMask  = 0x0007
	greVersion  = 1
)

// Payload prefixes of the simulator's GRE packets; the rest identifies the
// call so that the client can match echoes and early packets.
const (
	earlyPrefix = "pptpsim early "
	pingPrefix  = "pptpsim ping "
)

var errGRE = errors.New("not an enhanced GRE packet")

// greHeader is an enhanced GRE header. The payload length is not kept: it
// is always the length of the payload that goes with the header.
type greHeader struct {
	CallID         uint16 // the receiver's call ID
	HasSeq, HasAck bool
	Seq, Ack       uint32
}

// appendGRE appends the header and payload to b.
func appendGRE(b []byte, h greHeader, payload []byte) []byte {
	flags := uint16(greKey | greVersion)
	if h.HasSeq {
		flags |= greSeq
	}
	if h.HasAck {
		flags |= greAck
	}
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, greProtoPPP)
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	b = binary.BigEndian.AppendUint16(b, h.CallID)
	if h.HasSeq {
		b = binary.BigEndian.AppendUint32(b, h.Seq)
	}
	if h.HasAck {
		b = binary.BigEndian.AppendUint32(b, h.Ack)
	}
	return append(b, payload...)
}

// parseGRE decodes an enhanced GRE packet as a raw IP socket returns it (no
// IP header). Bytes after the payload length are padding and are ignored.
func parseGRE(b []byte) (greHeader, []byte, error) {
	if len(b) < greBaseLen {
		return greHeader{}, nil, fmt.Errorf("%d bytes: %w", len(b), errGRE)
	}
	flags := binary.BigEndian.Uint16(b[0:])
	switch {
	case flags&greVerMask != greVersion:
		return greHeader{}, nil, fmt.Errorf("version %d: %w", flags&greVerMask, errGRE)
	case flags&(greChecksum|greRouting) != 0, flags&greKey == 0:
		return greHeader{}, nil, fmt.Errorf("flags %#04x: %w", flags, errGRE)
	case binary.BigEndian.Uint16(b[2:]) != greProtoPPP:
		return greHeader{}, nil, fmt.Errorf("protocol %#04x: %w", binary.BigEndian.Uint16(b[2:]), errGRE)
	}
	h := greHeader{
		CallID: binary.BigEndian.Uint16(b[6:]),
		HasSeq: flags&greSeq != 0,
		HasAck: flags&greAck != 0,
	}
	n := int(binary.BigEndian.Uint16(b[4:]))
	rest := b[greBaseLen:]
	if h.HasSeq {
		if len(rest) < 4 {
			return greHeader{}, nil, fmt.Errorf("sequence number truncated: %w", errGRE)
		}
		h.Seq, rest = binary.BigEndian.Uint32(rest), rest[4:]
	}
	if h.HasAck {
		if len(rest) < 4 {
			return greHeader{}, nil, fmt.Errorf("acknowledgment number truncated: %w", errGRE)
		}
		h.Ack, rest = binary.BigEndian.Uint32(rest), rest[4:]
	}
	if len(rest) < n {
		return greHeader{}, nil, fmt.Errorf("payload length %d, %d bytes left: %w", n, len(rest), errGRE)
	}
	return h, rest[:n], nil
}

// greConn is a raw IPv4 socket for protocol 47. Reads return the GRE header
// and payload without the IP header. Every raw GRE socket of a namespace
// gets a copy of each GRE packet addressed to its bound address, so two
// simulators in one namespace must bind different addresses.
type greConn struct {
	c *net.IPConn
}

func listenGRE(ip net.IP) (*greConn, error) {
	addr := "0.0.0.0"
	if ip != nil && !ip.IsUnspecified() {
		addr = ip.String()
	}
	c, err := net.ListenPacket("ip4:gre", addr)
	if err != nil {
		return nil, fmt.Errorf("gre socket on %s: %w", addr, err)
	}
	return &greConn{c.(*net.IPConn)}, nil
}

func (g *greConn) send(to net.IP, h greHeader, payload []byte) error {
	_, err := g.c.WriteToIP(appendGRE(nil, h, payload), &net.IPAddr{IP: to})
	return err
}

// recv returns the next enhanced GRE packet; others are skipped.
func (g *greConn) recv(buf []byte) (greHeader, []byte, net.IP, error) {
	for {
		n, from, err := g.c.ReadFromIP(buf)
		if err != nil {
			return greHeader{}, nil, nil, err
		}
		h, payload, err := parseGRE(buf[:n])
		if err != nil {
			continue
		}
		return h, payload, from.IP, nil
	}
}

func (g *greConn) Close() error { return g.c.Close() }
