package alg

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Every field in these messages has its own value, so a field read from or
// written to the wrong offset shows up in the diff.
type parseTest struct {
	name string
	m    Message
	wire []byte
	err  error // nil when the wire form is valid
}

var parseTests = []parseTest{
	{
		name: "Start-Control-Connection-Request",
		m: &StartControlConnectionRequest{
			ProtocolVersion:     0x0100,
			FramingCapabilities: 0x00000003,
			BearerCapabilities:  0x00000002,
			MaxChannels:         0x0405,
			FirmwareRevision:    0x0607,
			HostName:            str64("pns.lan"),
			VendorString:        str64("pptp-alg test"),
		},
		wire: cat(
			h("009c 0001 1a2b3c4d 0001 0000"),             // length 156, control, magic, type 1, reserved
			h("0100 0000 00000003 00000002 0405 0607"),    // version, reserved, framing, bearer, channels, firmware
			pad("pns.lan", 64), pad("pptp-alg test", 64)), // host name, vendor
	},
	{
		name: "Start-Control-Connection-Reply",
		m: &StartControlConnectionReply{
			ProtocolVersion:     0x0100,
			ResultCode:          1,
			ErrorCode:           ErrorCodeBadValue,
			FramingCapabilities: 0x00000001,
			BearerCapabilities:  0x00000003,
			MaxChannels:         0x0809,
			FirmwareRevision:    0x0a0b,
			HostName:            str64("pac.example"),
			VendorString:        str64("vendor"),
		},
		wire: cat(
			h("009c 0001 1a2b3c4d 0002 0000"),
			h("0100 01 03 00000001 00000003 0809 0a0b"),
			pad("pac.example", 64), pad("vendor", 64)),
	},
	{
		name: "Stop-Control-Connection-Request",
		m:    &StopControlConnectionRequest{Reason: 2},
		wire: h("0010 0001 1a2b3c4d 0003 0000 02 00 0000"),
	},
	{
		name: "Stop-Control-Connection-Reply",
		m:    &StopControlConnectionReply{ResultCode: 2, ErrorCode: ErrorCodeNotConnected},
		wire: h("0010 0001 1a2b3c4d 0004 0000 02 01 0000"),
	},
	{
		name: "Echo-Request",
		m:    &EchoRequest{Identifier: 0xdeadbeef},
		wire: h("0010 0001 1a2b3c4d 0005 0000 deadbeef"),
	},
	{
		name: "Echo-Reply",
		m:    &EchoReply{Identifier: 0xdeadbeef, ResultCode: 1, ErrorCode: ErrorCodePACError},
		wire: h("0014 0001 1a2b3c4d 0006 0000 deadbeef 01 06 0000"),
	},
	{
		name: "Outgoing-Call-Request",
		m: &OutgoingCallRequest{
			CallID:                0x1234,
			CallSerialNumber:      0x0001,
			MinBPS:                2400,
			MaxBPS:                10000000,
			BearerType:            3,
			FramingType:           2,
			PacketRecvWindow:      64,
			PacketProcessingDelay: 5,
			PhoneNumberLength:     11,
			PhoneNumber:           str64("15550100123"),
			Subaddress:            str64("sub"),
		},
		wire: cat(
			h("00a8 0001 1a2b3c4d 0007 0000"),
			h("1234 0001 00000960 00989680 00000003 00000002"), // call ID, serial, min, max, bearer, framing
			h("0040 0005 000b 0000"),                           // window, delay, phone length, reserved
			pad("15550100123", 64), pad("sub", 64)),
	},
	{
		name: "Outgoing-Call-Reply",
		m: &OutgoingCallReply{
			CallID:                0xc001,
			PeerCallID:            0x1234,
			ResultCode:            OutgoingCallResultConnected,
			ErrorCode:             ErrorCodeNone,
			CauseCode:             0x0102,
			ConnectSpeed:          100000000,
			PacketRecvWindow:      16,
			PacketProcessingDelay: 3,
			PhysicalChannelID:     0x0a0b0c0d,
		},
		wire: h("0020 0001 1a2b3c4d 0008 0000 c001 1234 01 00 0102 05f5e100 0010 0003 0a0b0c0d"),
	},
	{
		name: "Incoming-Call-Request",
		m: &IncomingCallRequest{
			CallID:              0x4321,
			CallSerialNumber:    0x0102,
			CallBearerType:      1,
			PhysicalChannelID:   0x0a0b0c0d,
			DialedNumberLength:  4,
			DialingNumberLength: 5,
			DialedNumber:        str64("5551"),
			DialingNumber:       str64("55522"),
			Subaddress:          str64("s"),
		},
		wire: cat(
			h("00dc 0001 1a2b3c4d 0009 0000"),
			h("4321 0102 00000001 0a0b0c0d 0004 0005"), // call ID, serial, bearer, channel, lengths
			pad("5551", 64), pad("55522", 64), pad("s", 64)),
	},
	{
		name: "Incoming-Call-Reply",
		m: &IncomingCallReply{
			CallID:              0x1111,
			PeerCallID:          0x4321,
			ResultCode:          1,
			ErrorCode:           ErrorCodeBadCallID,
			PacketRecvWindow:    32,
			PacketTransmitDelay: 7,
		},
		wire: h("0018 0001 1a2b3c4d 000a 0000 1111 4321 01 05 0020 0007 0000"),
	},
	{
		name: "Incoming-Call-Connected",
		m: &IncomingCallConnected{
			PeerCallID:          0x1111,
			ConnectSpeed:        64000,
			PacketRecvWindow:    8,
			PacketTransmitDelay: 9,
			FramingType:         1,
		},
		wire: h("001c 0001 1a2b3c4d 000b 0000 1111 0000 0000fa00 0008 0009 00000001"),
	},
	{
		name: "Call-Clear-Request",
		m:    &CallClearRequest{CallID: 0x1234},
		wire: h("0010 0001 1a2b3c4d 000c 0000 1234 0000"),
	},
	{
		name: "Call-Disconnect-Notify",
		m: &CallDisconnectNotify{
			CallID:         0xc001,
			ResultCode:     3,
			ErrorCode:      ErrorCodeNoResource,
			CauseCode:      0x0506,
			CallStatistics: str128("frames 10"),
		},
		wire: cat(h("0094 0001 1a2b3c4d 000d 0000 c001 03 04 0506 0000"), pad("frames 10", 128)),
	},
	{
		name: "WAN-Error-Notify",
		m: &WANErrorNotify{
			PeerCallID:       0x1234,
			CRCErrors:        1,
			FramingErrors:    2,
			HardwareOverruns: 3,
			BufferOverruns:   4,
			TimeoutErrors:    5,
			AlignmentErrors:  6,
		},
		wire: h("0028 0001 1a2b3c4d 000e 0000 1234 0000 00000001 00000002 00000003 00000004 00000005 00000006"),
	},
	{
		name: "Set-Link-Info",
		m:    &SetLinkInfo{PeerCallID: 0xc001, SendACCM: 0xffffffff, ReceiveACCM: 0x000a0000},
		wire: h("0018 0001 1a2b3c4d 000f 0000 c001 0000 ffffffff 000a0000"),
	},

	{name: "empty", wire: nil, err: ErrBadLength},
	{name: "short, proven not control", wire: h("0020 3030"), err: ErrNotControl}, // found by FuzzParse
	{name: "short header", wire: h("0010 0001 1a2b3c4d 0005"), err: ErrBadLength},
	{name: "header only", wire: h("0010 0001 1a2b3c4d 0005 0000"), err: ErrBadLength},
	{name: "short body", wire: h("0010 0001 1a2b3c4d 0005 0000 dead"), err: ErrBadLength},
	{name: "trailing byte", wire: h("0010 0001 1a2b3c4d 0005 0000 deadbeef 00"), err: ErrBadLength},
	{name: "length of no message", wire: h("0011 0001 1a2b3c4d 0005 0000 deadbeef 00"), err: ErrBadLength},
	{name: "length of another type", wire: h("0014 0001 1a2b3c4d 0005 0000 deadbeef 0000 0000"), err: ErrBadLength},
	{name: "bad magic", wire: h("0010 0001 1a2b3c4e 0005 0000 deadbeef"), err: ErrBadMagic},
	{name: "management message", wire: h("0010 0002 1a2b3c4d 0005 0000 deadbeef"), err: ErrNotControl},
	{name: "type 0", wire: h("0010 0001 1a2b3c4d 0000 0000 deadbeef"), err: ErrUnknownType},
	{name: "type 16", wire: h("0010 0001 1a2b3c4d 0010 0000 deadbeef"), err: ErrUnknownType},
	{name: "type 0x0105", wire: h("0010 0001 1a2b3c4d 0105 0000 deadbeef"), err: ErrUnknownType},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.wire)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Parse error = %v, want %v", err, tt.err)
				}
				if m != nil {
					t.Fatalf("Parse returned %#v with its error", m)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.m, m); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAppend(t *testing.T) {
	for _, tt := range validTests() {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.wire, tt.m.Append(nil)); diff != "" {
				t.Errorf("Append (-want +got):\n%s", diff)
			}
			// Append must extend what it is given, not overwrite it.
			prefix := []byte("prefix")
			want := cat(prefix, tt.wire)
			if diff := cmp.Diff(want, tt.m.Append(bytes.Clone(prefix))); diff != "" {
				t.Errorf("Append after a prefix (-want +got):\n%s", diff)
			}
			if got, want := len(tt.wire), tt.m.Type().Len(); got != want {
				t.Errorf("%v is %d bytes on the wire, Len says %d", tt.m.Type(), got, want)
			}
		})
	}
}

// Peers that set reserved bits must still get through; Append writes zeros.
func TestParseIgnoresReserved(t *testing.T) {
	wire := h("0018 0001 1a2b3c4d 000f ffff c001 ffff ffffffff 000a0000")
	want := &SetLinkInfo{PeerCallID: 0xc001, SendACCM: 0xffffffff, ReceiveACCM: 0x000a0000}
	m, err := Parse(wire)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(zeroReserved(wire), m.Append(nil)); diff != "" {
		t.Errorf("Append (-want +got):\n%s", diff)
	}
}

func TestMessageTypes(t *testing.T) {
	tests := []struct {
		t          MessageType
		name       string
		len        int
		callID     int
		peerCallID int
	}{
		{0, "type(0)", 0, -1, -1},
		{TypeStartControlConnectionRequest, "Start-Control-Connection-Request", 156, -1, -1},
		{TypeStartControlConnectionReply, "Start-Control-Connection-Reply", 156, -1, -1},
		{TypeStopControlConnectionRequest, "Stop-Control-Connection-Request", 16, -1, -1},
		{TypeStopControlConnectionReply, "Stop-Control-Connection-Reply", 16, -1, -1},
		{TypeEchoRequest, "Echo-Request", 16, -1, -1},
		{TypeEchoReply, "Echo-Reply", 20, -1, -1},
		{TypeOutgoingCallRequest, "Outgoing-Call-Request", 168, 12, -1},
		{TypeOutgoingCallReply, "Outgoing-Call-Reply", 32, 12, 14},
		{TypeIncomingCallRequest, "Incoming-Call-Request", 220, 12, -1},
		{TypeIncomingCallReply, "Incoming-Call-Reply", 24, 12, 14},
		{TypeIncomingCallConnected, "Incoming-Call-Connected", 28, -1, 12},
		{TypeCallClearRequest, "Call-Clear-Request", 16, 12, -1},
		{TypeCallDisconnectNotify, "Call-Disconnect-Notify", 148, 12, -1},
		{TypeWANErrorNotify, "WAN-Error-Notify", 40, -1, 12},
		{TypeSetLinkInfo, "Set-Link-Info", 24, -1, 12},
		{16, "type(16)", 0, -1, -1},
		{99, "type(99)", 0, -1, -1},
		{0xffff, "type(65535)", 0, -1, -1},
	}
	for _, tt := range tests {
		got := []any{tt.t.String(), tt.t.Len(), tt.t.CallIDOffset(), tt.t.PeerCallIDOffset()}
		want := []any{tt.name, tt.len, tt.callID, tt.peerCallID}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("type %d: name, len, call ID offset, peer call ID offset (-want +got):\n%s", uint16(tt.t), diff)
		}
	}
	if got := TypeIncomingCallRequest.Len(); got != MaxMessageLen {
		t.Errorf("MaxMessageLen = %d, the largest message is %d", MaxMessageLen, got)
	}
}

// The relay patches call IDs at the offsets without parsing; they must be
// where the codec puts the fields, and every type must have a test case.
func TestCallIDOffsetsMatchCodec(t *testing.T) {
	tested := map[MessageType]bool{}
	for _, tt := range validTests() {
		typ := tt.m.Type()
		tested[typ] = true
		callID, peerCallID := callIDs(tt.m)
		for _, f := range []struct {
			name string
			off  int
			want int
		}{
			{"Call ID", typ.CallIDOffset(), callID},
			{"Peer's Call ID", typ.PeerCallIDOffset(), peerCallID},
		} {
			if (f.off < 0) != (f.want < 0) {
				t.Errorf("%v: %s offset %d, but the struct's field is %d (-1: none)", typ, f.name, f.off, f.want)
				continue
			}
			if f.off >= 0 {
				if got := int(binary.BigEndian.Uint16(tt.wire[f.off:])); got != f.want {
					t.Errorf("%v: %s at offset %d is %#04x, struct has %#04x", typ, f.name, f.off, got, f.want)
				}
			}
		}
	}
	for typ := TypeStartControlConnectionRequest; typ <= TypeSetLinkInfo; typ++ {
		if !tested[typ] {
			t.Errorf("no test case for %v", typ)
		}
	}
}

// callIDs returns m's Call ID and Peer's Call ID fields, -1 for those it lacks.
func callIDs(m Message) (callID, peerCallID int) {
	switch m := m.(type) {
	case *OutgoingCallRequest:
		return int(m.CallID), -1
	case *OutgoingCallReply:
		return int(m.CallID), int(m.PeerCallID)
	case *IncomingCallRequest:
		return int(m.CallID), -1
	case *IncomingCallReply:
		return int(m.CallID), int(m.PeerCallID)
	case *IncomingCallConnected:
		return -1, int(m.PeerCallID)
	case *CallClearRequest:
		return int(m.CallID), -1
	case *CallDisconnectNotify:
		return int(m.CallID), -1
	case *WANErrorNotify:
		return -1, int(m.PeerCallID)
	case *SetLinkInfo:
		return -1, int(m.PeerCallID)
	}
	return -1, -1
}

// reservedOffsets lists, per type, the body bytes RFC 2637 marks reserved;
// Reserved0 of the header (bytes 10 and 11) is in every type.
var reservedOffsets = map[MessageType][]int{
	TypeStartControlConnectionRequest: {14, 15},
	TypeStopControlConnectionRequest:  {13, 14, 15},
	TypeStopControlConnectionReply:    {14, 15},
	TypeEchoReply:                     {18, 19},
	TypeOutgoingCallRequest:           {38, 39},
	TypeIncomingCallReply:             {22, 23},
	TypeIncomingCallConnected:         {14, 15},
	TypeCallClearRequest:              {14, 15},
	TypeCallDisconnectNotify:          {18, 19},
	TypeWANErrorNotify:                {14, 15},
	TypeSetLinkInfo:                   {14, 15},
}

// zeroReserved returns a copy of the whole message b with its reserved bytes
// zeroed: the form Append gives it.
func zeroReserved(b []byte) []byte {
	b = bytes.Clone(b)
	t := MessageType(binary.BigEndian.Uint16(b[8:]))
	for _, off := range append([]int{10, 11}, reservedOffsets[t]...) {
		b[off] = 0
	}
	return b
}

func validTests() []parseTest {
	var valid []parseTest
	for _, tt := range parseTests {
		if tt.err == nil {
			valid = append(valid, tt)
		}
	}
	return valid
}

// h decodes hex, ignoring spaces.
func h(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// pad returns s followed by zeros up to n bytes, as fixed strings are sent.
func pad(s string, n int) []byte {
	b := make([]byte, n)
	copy(b, s)
	return b
}

func str64(s string) (b [64]byte) {
	copy(b[:], s)
	return b
}

func str128(s string) (b [128]byte) {
	copy(b[:], s)
	return b
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add(tt.wire)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		// Parse takes exactly what Frame delimits as one whole message, and
		// refuses the rest for the same reason Frame does.
		n, ferr := Frame(b)
		switch {
		case (err == nil) != (ferr == nil && n > 0 && n == len(b)):
			t.Fatalf("Parse error %v, but Frame = %d, %v for %d bytes", err, n, ferr, len(b))
		case ferr != nil && !errors.Is(err, ferr):
			t.Fatalf("Parse error %v, Frame error %v", err, ferr)
		}
		if err != nil {
			return
		}
		wire := m.Append(nil)
		if diff := cmp.Diff(zeroReserved(b), wire); diff != "" {
			t.Fatalf("Append(Parse(b)) differs from b beyond reserved bytes (-b +got):\n%s", diff)
		}
		m2, err := Parse(wire)
		if err != nil {
			t.Fatalf("Parse(Append(Parse(b))): %v", err)
		}
		if diff := cmp.Diff(m, m2); diff != "" {
			t.Fatalf("parse, append, parse changed the message (-first +second):\n%s", diff)
		}
		if wire2 := m2.Append(nil); !bytes.Equal(wire, wire2) {
			t.Fatalf("second Append differs:\n%x\n%x", wire, wire2)
		}
	})
}
