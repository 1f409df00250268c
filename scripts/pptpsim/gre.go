package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Payload prefixes of the simulator's GRE packets; the rest identifies the
// call so that the client can match echoes and early packets.
const (
	earlyPrefix = "pptpsim early "
	pingPrefix  = "pptpsim ping "
)

var errGRE = errors.New("not an enhanced GRE packet")

// greHeader is what the simulator reads and writes of an enhanced GRE
// header (RFC 2637 section 4.1). The payload length is not kept: it is
// always the length of the payload that goes with the header.
type greHeader struct {
	CallID         uint16 // the receiver's call ID
	HasSeq, HasAck bool
	Seq, Ack       uint32
}

// layer returns h as gopacket's GRE layer for a payload of n bytes. In
// version 1 the 32-bit key holds the payload length and the call ID.
func (h greHeader) layer(n int) *layers.GRE {
	return &layers.GRE{
		KeyPresent: true,
		SeqPresent: h.HasSeq,
		AckPresent: h.HasAck,
		Version:    1,
		Protocol:   layers.EthernetTypePPP,
		Key:        uint32(n)<<16 | uint32(h.CallID),
		Seq:        h.Seq,
		Ack:        h.Ack,
	}
}

// appendGRE appends the header and payload to b.
func appendGRE(b []byte, h greHeader, payload []byte) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{}, h.layer(len(payload)), gopacket.Payload(payload)); err != nil {
		panic("pptpsim: serialize GRE: " + err.Error()) // only fails on a broken buffer
	}
	return append(b, buf.Bytes()...)
}

// parseGRE decodes an enhanced GRE packet as a raw IP socket returns it (no
// IP header). Bytes after the payload length are padding and are ignored.
func parseGRE(b []byte) (greHeader, []byte, error) {
	var g layers.GRE
	if err := g.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
		return greHeader{}, nil, fmt.Errorf("%d bytes: %v: %w", len(b), err, errGRE)
	}
	switch {
	case g.Version != 1:
		return greHeader{}, nil, fmt.Errorf("version %d: %w", g.Version, errGRE)
	case g.ChecksumPresent, g.RoutingPresent, !g.KeyPresent:
		return greHeader{}, nil, fmt.Errorf("flags C=%v R=%v K=%v: %w", g.ChecksumPresent, g.RoutingPresent, g.KeyPresent, errGRE)
	case g.Protocol != layers.EthernetTypePPP:
		return greHeader{}, nil, fmt.Errorf("protocol %#04x: %w", uint16(g.Protocol), errGRE)
	}
	n := int(g.Key >> 16)
	if len(g.Payload) < n {
		return greHeader{}, nil, fmt.Errorf("payload length %d, %d bytes left: %w", n, len(g.Payload), errGRE)
	}
	h := greHeader{
		CallID: uint16(g.Key),
		HasSeq: g.SeqPresent, Seq: g.Seq,
		HasAck: g.AckPresent, Ack: g.Ack,
	}
	return h, g.Payload[:n], nil
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
