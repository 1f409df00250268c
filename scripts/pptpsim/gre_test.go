package main

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestGRE(t *testing.T) {
	tests := []struct {
		name    string
		h       greHeader
		payload []byte
		wire    []byte
		ok      bool
		// parseOnly cases are not what appendGRE writes, so they are
		// checked one way.
		parseOnly bool
	}{
		{
			name:    "base header only",
			h:       greHeader{CallID: 0x1234},
			payload: []byte{0xff, 0x03},
			wire:    []byte{0x20, 0x01, 0x88, 0x0b, 0x00, 0x02, 0x12, 0x34, 0xff, 0x03},
			ok:      true,
		},
		{
			name:    "sequence number",
			h:       greHeader{CallID: 7, HasSeq: true, Seq: 0x01020304},
			payload: []byte("x"),
			wire:    []byte{0x30, 0x01, 0x88, 0x0b, 0x00, 0x01, 0x00, 0x07, 1, 2, 3, 4, 'x'},
			ok:      true,
		},
		{
			name:    "sequence and ack numbers",
			h:       greHeader{CallID: 0xffff, HasSeq: true, Seq: 5, HasAck: true, Ack: 0xa0b0c0d0},
			payload: []byte("ab"),
			wire: []byte{0x30, 0x81, 0x88, 0x0b, 0x00, 0x02, 0xff, 0xff,
				0, 0, 0, 5, 0xa0, 0xb0, 0xc0, 0xd0, 'a', 'b'},
			ok: true,
		},
		{
			// An ack-only packet carries no payload (RFC 2637 section 4.2).
			name: "ack only",
			h:    greHeader{CallID: 1, HasAck: true, Ack: 9},
			wire: []byte{0x20, 0x81, 0x88, 0x0b, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 9},
			ok:   true,
		},
		{
			name:      "padding after the payload",
			h:         greHeader{CallID: 2},
			payload:   []byte("p"),
			wire:      []byte{0x20, 0x01, 0x88, 0x0b, 0x00, 0x01, 0x00, 0x02, 'p', 0, 0},
			ok:        true,
			parseOnly: true,
		},
		{
			// Bits enhanced GRE leaves unused (strict source route,
			// recursion control, reserved flags) are ignored.
			name:      "unused bits set",
			h:         greHeader{CallID: 3},
			payload:   []byte("q"),
			wire:      []byte{0x2f, 0x79, 0x88, 0x0b, 0x00, 0x01, 0x00, 0x03, 'q'},
			ok:        true,
			parseOnly: true,
		},
		{name: "empty"},
		{name: "routing with an empty route", wire: []byte{0x60, 0x01, 0x88, 0x0b, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0}},
		{name: "key truncated", wire: []byte{0x20, 0x01, 0x88, 0x0b, 0x00, 0x00}},
		{name: "short", wire: []byte{0x20, 0x01, 0x88, 0x0b, 0x00, 0x00, 0x00}},
		{name: "version 0", wire: []byte{0x20, 0x00, 0x88, 0x0b, 0x00, 0x00, 0x00, 0x01}},
		{name: "no key", wire: []byte{0x00, 0x01, 0x88, 0x0b, 0x00, 0x00, 0x00, 0x01}},
		{name: "checksum", wire: []byte{0xa0, 0x01, 0x88, 0x0b, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0}},
		{name: "routing", wire: []byte{0x60, 0x01, 0x88, 0x0b, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0}},
		{name: "not PPP", wire: []byte{0x20, 0x01, 0x08, 0x00, 0x00, 0x00, 0x00, 0x01}},
		{name: "sequence truncated", wire: []byte{0x30, 0x01, 0x88, 0x0b, 0x00, 0x00, 0x00, 0x01, 0, 0, 0}},
		{name: "ack truncated", wire: []byte{0x30, 0x81, 0x88, 0x0b, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 1, 0}},
		{name: "payload truncated", wire: []byte{0x20, 0x01, 0x88, 0x0b, 0x00, 0x03, 0x00, 0x01, 'a', 'b'}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, payload, err := parseGRE(tt.wire)
			if !tt.ok {
				if !errors.Is(err, errGRE) {
					t.Fatalf("parseGRE: got error %v, want errGRE", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseGRE: %v", err)
			}
			if diff := cmp.Diff(tt.h, h); diff != "" {
				t.Errorf("parseGRE header (-want +got):\n%s", diff)
			}
			if !bytes.Equal(payload, tt.payload) {
				t.Errorf("parseGRE payload = %x, want %x", payload, tt.payload)
			}
			if tt.parseOnly {
				return
			}
			if diff := cmp.Diff(tt.wire, appendGRE(nil, tt.h, tt.payload)); diff != "" {
				t.Errorf("appendGRE (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzGRE(f *testing.F) {
	f.Add([]byte{0x30, 0x81, 0x88, 0x0b, 0x00, 0x02, 0xff, 0xff, 0, 0, 0, 5, 0, 0, 0, 6, 'a', 'b'})
	f.Add([]byte{0x20, 0x01, 0x88, 0x0b, 0x00, 0x00, 0x00, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := parseGRE(b)
		if err != nil {
			return
		}
		wire := appendGRE(nil, h, payload)
		h2, payload2, err := parseGRE(wire)
		if err != nil {
			t.Fatalf("parse of %x after marshal: %v", wire, err)
		}
		if diff := cmp.Diff(h, h2); diff != "" {
			t.Errorf("header changed (-first +second):\n%s", diff)
		}
		if !bytes.Equal(payload, payload2) {
			t.Errorf("payload changed: %x, then %x", payload, payload2)
		}
	})
}
