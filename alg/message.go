package alg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// Wire constants of the control message header (RFC 2637 section 1.4).
const (
	Magic         = 0x1A2B3C4D // Magic Cookie, in every control message
	HeaderLen     = 12
	MaxMessageLen = 220 // the largest control message (Incoming-Call-Request)

	controlMessage = 1 // PPTP Message Type of every control message
)

// Errors that Frame and Parse wrap, for callers that branch on why a stream
// was refused.
var (
	ErrBadMagic    = errors.New("pptp: bad magic cookie")
	ErrBadLength   = errors.New("pptp: bad message length")
	ErrUnknownType = errors.New("pptp: unknown control message type")
	ErrNotControl  = errors.New("pptp: not a control message")
)

// MessageType is the Control Message Type field of the header.
type MessageType uint16

// Control message types, RFC 2637 section 1.4.
const (
	TypeStartControlConnectionRequest MessageType = 1
	TypeStartControlConnectionReply   MessageType = 2
	TypeStopControlConnectionRequest  MessageType = 3
	TypeStopControlConnectionReply    MessageType = 4
	TypeEchoRequest                   MessageType = 5
	TypeEchoReply                     MessageType = 6
	TypeOutgoingCallRequest           MessageType = 7
	TypeOutgoingCallReply             MessageType = 8
	TypeIncomingCallRequest           MessageType = 9
	TypeIncomingCallReply             MessageType = 10
	TypeIncomingCallConnected         MessageType = 11
	TypeCallClearRequest              MessageType = 12
	TypeCallDisconnectNotify          MessageType = 13
	TypeWANErrorNotify                MessageType = 14
	TypeSetLinkInfo                   MessageType = 15
)

// Result Code values of an Outgoing-Call-Reply, RFC 2637 section 2.8.
const (
	OutgoingCallResultConnected    = 1
	OutgoingCallResultGeneralError = 2 // see the Error Code
	OutgoingCallResultNoCarrier    = 3
	OutgoingCallResultBusy         = 4
	OutgoingCallResultNoDialTone   = 5
	OutgoingCallResultTimeout      = 6
	OutgoingCallResultDoNotAccept  = 7
)

// General Error Codes, RFC 2637 section 2.2, carried in the Error Code field
// of replies whose Result Code says General Error.
const (
	ErrorCodeNone         = 0
	ErrorCodeNotConnected = 1 // no control connection exists yet
	ErrorCodeBadFormat    = 2
	ErrorCodeBadValue     = 3
	ErrorCodeNoResource   = 4
	ErrorCodeBadCallID    = 5
	ErrorCodePACError     = 6
)

// typeInfo is what the codec knows about a control message type without
// decoding it. Offsets count from the start of the message; -1 means the
// type has no such field.
type typeInfo struct {
	name               string
	len                int
	callID, peerCallID int
}

// types holds the fixed lengths and call-ID positions of RFC 2637 section 2.
var types = [...]typeInfo{
	TypeStartControlConnectionRequest: {"Start-Control-Connection-Request", 156, -1, -1},
	TypeStartControlConnectionReply:   {"Start-Control-Connection-Reply", 156, -1, -1},
	TypeStopControlConnectionRequest:  {"Stop-Control-Connection-Request", 16, -1, -1},
	TypeStopControlConnectionReply:    {"Stop-Control-Connection-Reply", 16, -1, -1},
	TypeEchoRequest:                   {"Echo-Request", 16, -1, -1},
	TypeEchoReply:                     {"Echo-Reply", 20, -1, -1},
	TypeOutgoingCallRequest:           {"Outgoing-Call-Request", 168, 12, -1},
	TypeOutgoingCallReply:             {"Outgoing-Call-Reply", 32, 12, 14},
	TypeIncomingCallRequest:           {"Incoming-Call-Request", 220, 12, -1},
	TypeIncomingCallReply:             {"Incoming-Call-Reply", 24, 12, 14},
	TypeIncomingCallConnected:         {"Incoming-Call-Connected", 28, -1, 12},
	TypeCallClearRequest:              {"Call-Clear-Request", 16, 12, -1},
	TypeCallDisconnectNotify:          {"Call-Disconnect-Notify", 148, 12, -1},
	TypeWANErrorNotify:                {"WAN-Error-Notify", 40, -1, 12},
	TypeSetLinkInfo:                   {"Set-Link-Info", 24, -1, 12},
}

func (t MessageType) info() (typeInfo, bool) {
	if t == 0 || int(t) >= len(types) {
		return typeInfo{}, false
	}
	return types[t], true
}

// String returns the message's name as RFC 2637 spells it.
func (t MessageType) String() string {
	if i, ok := t.info(); ok {
		return i.name
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// Len returns the fixed wire length of a message of type t, header
// included, or 0 if t is unknown.
func (t MessageType) Len() int {
	i, _ := t.info()
	return i.len
}

// CallIDOffset returns the byte offset of the Call ID field within a
// message of type t, or -1 if the type has none.
func (t MessageType) CallIDOffset() int {
	if i, ok := t.info(); ok {
		return i.callID
	}
	return -1
}

// PeerCallIDOffset returns the byte offset of the Peer's Call ID field
// within a message of type t, or -1 if the type has none.
func (t MessageType) PeerCallIDOffset() int {
	if i, ok := t.info(); ok {
		return i.peerCallID
	}
	return -1
}

// isMessageLen reports whether n is the length of some control message.
func isMessageLen(n int) bool {
	for _, i := range types {
		if i.len > 0 && i.len == n {
			return true
		}
	}
	return false
}

// Message is one PPTP control message.
type Message interface {
	Type() MessageType
	// Append appends the message's wire form (header included) to b.
	Append(b []byte) []byte
}

// message is what Parse needs of a Message: filling it from a body whose
// length is already checked.
type message interface {
	Message
	decode(body []byte)
}

// Parse decodes one whole control message; b must hold exactly that message,
// as Frame delimits it. Reserved fields are ignored, so that a peer which
// sets them still gets through the router.
func Parse(b []byte) (Message, error) {
	t, err := checkHeader(b)
	if err != nil {
		return nil, err
	}
	m := newMessage(t)
	m.decode(b[HeaderLen:])
	return m, nil
}

// checkHeader checks everything Parse relies on before a field is read.
// The header verdict is Frame's, so the two never disagree about a stream.
func checkHeader(b []byte) (MessageType, error) {
	n, err := Frame(b)
	switch {
	case err != nil:
		return 0, fmt.Errorf("header %x: %w", b[:min(len(b), HeaderLen)], err)
	case len(b) < HeaderLen:
		return 0, fmt.Errorf("%d bytes, shorter than a header: %w", len(b), ErrBadLength)
	}
	t := MessageType(binary.BigEndian.Uint16(b[8:]))
	if n != len(b) {
		return 0, fmt.Errorf("%v: %d bytes, want %d: %w", t, len(b), t.Len(), ErrBadLength)
	}
	return t, nil
}

func newMessage(t MessageType) message {
	switch t {
	case TypeStartControlConnectionRequest:
		return new(StartControlConnectionRequest)
	case TypeStartControlConnectionReply:
		return new(StartControlConnectionReply)
	case TypeStopControlConnectionRequest:
		return new(StopControlConnectionRequest)
	case TypeStopControlConnectionReply:
		return new(StopControlConnectionReply)
	case TypeEchoRequest:
		return new(EchoRequest)
	case TypeEchoReply:
		return new(EchoReply)
	case TypeOutgoingCallRequest:
		return new(OutgoingCallRequest)
	case TypeOutgoingCallReply:
		return new(OutgoingCallReply)
	case TypeIncomingCallRequest:
		return new(IncomingCallRequest)
	case TypeIncomingCallReply:
		return new(IncomingCallReply)
	case TypeIncomingCallConnected:
		return new(IncomingCallConnected)
	case TypeCallClearRequest:
		return new(CallClearRequest)
	case TypeCallDisconnectNotify:
		return new(CallDisconnectNotify)
	case TypeWANErrorNotify:
		return new(WANErrorNotify)
	case TypeSetLinkInfo:
		return new(SetLinkInfo)
	}
	panic(fmt.Sprintf("alg: no message struct for checked type %v", t))
}

// StartControlConnectionRequest opens a control connection, RFC 2637
// section 2.1.
type StartControlConnectionRequest struct {
	ProtocolVersion     uint16
	FramingCapabilities uint32
	BearerCapabilities  uint32
	MaxChannels         uint16
	FirmwareRevision    uint16
	HostName            [64]byte
	VendorString        [64]byte
}

func (*StartControlConnectionRequest) Type() MessageType { return TypeStartControlConnectionRequest }

func (m *StartControlConnectionRequest) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.ProtocolVersion)
	w.zero(2) // Reserved1
	w.u32(m.FramingCapabilities)
	w.u32(m.BearerCapabilities)
	w.u16(m.MaxChannels)
	w.u16(m.FirmwareRevision)
	w.bytes(m.HostName[:])
	w.bytes(m.VendorString[:])
	return w.b
}

func (m *StartControlConnectionRequest) decode(body []byte) {
	r := reader{body}
	m.ProtocolVersion = r.u16()
	r.skip(2) // Reserved1
	m.FramingCapabilities = r.u32()
	m.BearerCapabilities = r.u32()
	m.MaxChannels = r.u16()
	m.FirmwareRevision = r.u16()
	r.bytes(m.HostName[:])
	r.bytes(m.VendorString[:])
}

// StartControlConnectionReply answers a StartControlConnectionRequest, RFC
// 2637 section 2.2.
type StartControlConnectionReply struct {
	ProtocolVersion     uint16
	ResultCode          uint8
	ErrorCode           uint8
	FramingCapabilities uint32
	BearerCapabilities  uint32
	MaxChannels         uint16
	FirmwareRevision    uint16
	HostName            [64]byte
	VendorString        [64]byte
}

func (*StartControlConnectionReply) Type() MessageType { return TypeStartControlConnectionReply }

func (m *StartControlConnectionReply) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.ProtocolVersion)
	w.u8(m.ResultCode)
	w.u8(m.ErrorCode)
	w.u32(m.FramingCapabilities)
	w.u32(m.BearerCapabilities)
	w.u16(m.MaxChannels)
	w.u16(m.FirmwareRevision)
	w.bytes(m.HostName[:])
	w.bytes(m.VendorString[:])
	return w.b
}

func (m *StartControlConnectionReply) decode(body []byte) {
	r := reader{body}
	m.ProtocolVersion = r.u16()
	m.ResultCode = r.u8()
	m.ErrorCode = r.u8()
	m.FramingCapabilities = r.u32()
	m.BearerCapabilities = r.u32()
	m.MaxChannels = r.u16()
	m.FirmwareRevision = r.u16()
	r.bytes(m.HostName[:])
	r.bytes(m.VendorString[:])
}

// StopControlConnectionRequest closes a control connection, RFC 2637
// section 2.3.
type StopControlConnectionRequest struct {
	Reason uint8
}

func (*StopControlConnectionRequest) Type() MessageType { return TypeStopControlConnectionRequest }

func (m *StopControlConnectionRequest) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u8(m.Reason)
	w.zero(1) // Reserved1
	w.zero(2) // Reserved2
	return w.b
}

func (m *StopControlConnectionRequest) decode(body []byte) {
	r := reader{body}
	m.Reason = r.u8()
	r.skip(3) // Reserved1, Reserved2
}

// StopControlConnectionReply answers a StopControlConnectionRequest, RFC
// 2637 section 2.4.
type StopControlConnectionReply struct {
	ResultCode uint8
	ErrorCode  uint8
}

func (*StopControlConnectionReply) Type() MessageType { return TypeStopControlConnectionReply }

func (m *StopControlConnectionReply) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u8(m.ResultCode)
	w.u8(m.ErrorCode)
	w.zero(2) // Reserved1
	return w.b
}

func (m *StopControlConnectionReply) decode(body []byte) {
	r := reader{body}
	m.ResultCode = r.u8()
	m.ErrorCode = r.u8()
	r.skip(2) // Reserved1
}

// EchoRequest is a keep-alive, RFC 2637 section 2.5.
type EchoRequest struct {
	Identifier uint32
}

func (*EchoRequest) Type() MessageType { return TypeEchoRequest }

func (m *EchoRequest) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u32(m.Identifier)
	return w.b
}

func (m *EchoRequest) decode(body []byte) {
	r := reader{body}
	m.Identifier = r.u32()
}

// EchoReply answers an EchoRequest, RFC 2637 section 2.6.
type EchoReply struct {
	Identifier uint32
	ResultCode uint8
	ErrorCode  uint8
}

func (*EchoReply) Type() MessageType { return TypeEchoReply }

func (m *EchoReply) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u32(m.Identifier)
	w.u8(m.ResultCode)
	w.u8(m.ErrorCode)
	w.zero(2) // Reserved1
	return w.b
}

func (m *EchoReply) decode(body []byte) {
	r := reader{body}
	m.Identifier = r.u32()
	m.ResultCode = r.u8()
	m.ErrorCode = r.u8()
	r.skip(2) // Reserved1
}

// OutgoingCallRequest asks the PAC to place a call, RFC 2637 section 2.7.
// CallID is the PNS's own ID for the call.
type OutgoingCallRequest struct {
	CallID                uint16
	CallSerialNumber      uint16
	MinBPS                uint32
	MaxBPS                uint32
	BearerType            uint32
	FramingType           uint32
	PacketRecvWindow      uint16
	PacketProcessingDelay uint16
	PhoneNumberLength     uint16
	PhoneNumber           [64]byte
	Subaddress            [64]byte
}

func (*OutgoingCallRequest) Type() MessageType { return TypeOutgoingCallRequest }

func (m *OutgoingCallRequest) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.CallID)
	w.u16(m.CallSerialNumber)
	w.u32(m.MinBPS)
	w.u32(m.MaxBPS)
	w.u32(m.BearerType)
	w.u32(m.FramingType)
	w.u16(m.PacketRecvWindow)
	w.u16(m.PacketProcessingDelay)
	w.u16(m.PhoneNumberLength)
	w.zero(2) // Reserved1
	w.bytes(m.PhoneNumber[:])
	w.bytes(m.Subaddress[:])
	return w.b
}

func (m *OutgoingCallRequest) decode(body []byte) {
	r := reader{body}
	m.CallID = r.u16()
	m.CallSerialNumber = r.u16()
	m.MinBPS = r.u32()
	m.MaxBPS = r.u32()
	m.BearerType = r.u32()
	m.FramingType = r.u32()
	m.PacketRecvWindow = r.u16()
	m.PacketProcessingDelay = r.u16()
	m.PhoneNumberLength = r.u16()
	r.skip(2) // Reserved1
	r.bytes(m.PhoneNumber[:])
	r.bytes(m.Subaddress[:])
}

// OutgoingCallReply answers an OutgoingCallRequest, RFC 2637 section 2.8.
// CallID is the PAC's ID for the call, PeerCallID the PNS's.
type OutgoingCallReply struct {
	CallID                uint16
	PeerCallID            uint16
	ResultCode            uint8 // OutgoingCallResult*
	ErrorCode             uint8 // ErrorCode*
	CauseCode             uint16
	ConnectSpeed          uint32
	PacketRecvWindow      uint16
	PacketProcessingDelay uint16
	PhysicalChannelID     uint32
}

func (*OutgoingCallReply) Type() MessageType { return TypeOutgoingCallReply }

func (m *OutgoingCallReply) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.CallID)
	w.u16(m.PeerCallID)
	w.u8(m.ResultCode)
	w.u8(m.ErrorCode)
	w.u16(m.CauseCode)
	w.u32(m.ConnectSpeed)
	w.u16(m.PacketRecvWindow)
	w.u16(m.PacketProcessingDelay)
	w.u32(m.PhysicalChannelID)
	return w.b
}

func (m *OutgoingCallReply) decode(body []byte) {
	r := reader{body}
	m.CallID = r.u16()
	m.PeerCallID = r.u16()
	m.ResultCode = r.u8()
	m.ErrorCode = r.u8()
	m.CauseCode = r.u16()
	m.ConnectSpeed = r.u32()
	m.PacketRecvWindow = r.u16()
	m.PacketProcessingDelay = r.u16()
	m.PhysicalChannelID = r.u32()
}

// IncomingCallRequest tells the PNS of a call arriving at the PAC, RFC 2637
// section 2.9. CallID is the PAC's ID for the call.
type IncomingCallRequest struct {
	CallID              uint16
	CallSerialNumber    uint16
	CallBearerType      uint32
	PhysicalChannelID   uint32
	DialedNumberLength  uint16
	DialingNumberLength uint16
	DialedNumber        [64]byte
	DialingNumber       [64]byte
	Subaddress          [64]byte
}

func (*IncomingCallRequest) Type() MessageType { return TypeIncomingCallRequest }

func (m *IncomingCallRequest) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.CallID)
	w.u16(m.CallSerialNumber)
	w.u32(m.CallBearerType)
	w.u32(m.PhysicalChannelID)
	w.u16(m.DialedNumberLength)
	w.u16(m.DialingNumberLength)
	w.bytes(m.DialedNumber[:])
	w.bytes(m.DialingNumber[:])
	w.bytes(m.Subaddress[:])
	return w.b
}

func (m *IncomingCallRequest) decode(body []byte) {
	r := reader{body}
	m.CallID = r.u16()
	m.CallSerialNumber = r.u16()
	m.CallBearerType = r.u32()
	m.PhysicalChannelID = r.u32()
	m.DialedNumberLength = r.u16()
	m.DialingNumberLength = r.u16()
	r.bytes(m.DialedNumber[:])
	r.bytes(m.DialingNumber[:])
	r.bytes(m.Subaddress[:])
}

// IncomingCallReply answers an IncomingCallRequest, RFC 2637 section 2.10.
// CallID is the PNS's ID for the call, PeerCallID the PAC's.
type IncomingCallReply struct {
	CallID              uint16
	PeerCallID          uint16
	ResultCode          uint8
	ErrorCode           uint8
	PacketRecvWindow    uint16
	PacketTransmitDelay uint16
}

func (*IncomingCallReply) Type() MessageType { return TypeIncomingCallReply }

func (m *IncomingCallReply) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.CallID)
	w.u16(m.PeerCallID)
	w.u8(m.ResultCode)
	w.u8(m.ErrorCode)
	w.u16(m.PacketRecvWindow)
	w.u16(m.PacketTransmitDelay)
	w.zero(2) // Reserved1
	return w.b
}

func (m *IncomingCallReply) decode(body []byte) {
	r := reader{body}
	m.CallID = r.u16()
	m.PeerCallID = r.u16()
	m.ResultCode = r.u8()
	m.ErrorCode = r.u8()
	m.PacketRecvWindow = r.u16()
	m.PacketTransmitDelay = r.u16()
	r.skip(2) // Reserved1
}

// IncomingCallConnected completes an incoming call, RFC 2637 section 2.11.
// PeerCallID is the PNS's ID for the call.
type IncomingCallConnected struct {
	PeerCallID          uint16
	ConnectSpeed        uint32
	PacketRecvWindow    uint16
	PacketTransmitDelay uint16
	FramingType         uint32
}

func (*IncomingCallConnected) Type() MessageType { return TypeIncomingCallConnected }

func (m *IncomingCallConnected) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.PeerCallID)
	w.zero(2) // Reserved1
	w.u32(m.ConnectSpeed)
	w.u16(m.PacketRecvWindow)
	w.u16(m.PacketTransmitDelay)
	w.u32(m.FramingType)
	return w.b
}

func (m *IncomingCallConnected) decode(body []byte) {
	r := reader{body}
	m.PeerCallID = r.u16()
	r.skip(2) // Reserved1
	m.ConnectSpeed = r.u32()
	m.PacketRecvWindow = r.u16()
	m.PacketTransmitDelay = r.u16()
	m.FramingType = r.u32()
}

// CallClearRequest asks the PAC to end a call, RFC 2637 section 2.12.
// CallID is the PNS's ID for the call.
type CallClearRequest struct {
	CallID uint16
}

func (*CallClearRequest) Type() MessageType { return TypeCallClearRequest }

func (m *CallClearRequest) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.CallID)
	w.zero(2) // Reserved1
	return w.b
}

func (m *CallClearRequest) decode(body []byte) {
	r := reader{body}
	m.CallID = r.u16()
	r.skip(2) // Reserved1
}

// CallDisconnectNotify reports that the PAC ended a call, RFC 2637 section
// 2.13. RFC 2637 makes CallID the PAC's ID, but some peers send the PNS's.
type CallDisconnectNotify struct {
	CallID         uint16
	ResultCode     uint8
	ErrorCode      uint8
	CauseCode      uint16
	CallStatistics [128]byte
}

func (*CallDisconnectNotify) Type() MessageType { return TypeCallDisconnectNotify }

func (m *CallDisconnectNotify) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.CallID)
	w.u8(m.ResultCode)
	w.u8(m.ErrorCode)
	w.u16(m.CauseCode)
	w.zero(2) // Reserved1
	w.bytes(m.CallStatistics[:])
	return w.b
}

func (m *CallDisconnectNotify) decode(body []byte) {
	r := reader{body}
	m.CallID = r.u16()
	m.ResultCode = r.u8()
	m.ErrorCode = r.u8()
	m.CauseCode = r.u16()
	r.skip(2) // Reserved1
	r.bytes(m.CallStatistics[:])
}

// WANErrorNotify reports a call's line errors to the PNS, RFC 2637 section
// 2.14. PeerCallID is the PNS's ID for the call.
type WANErrorNotify struct {
	PeerCallID       uint16
	CRCErrors        uint32
	FramingErrors    uint32
	HardwareOverruns uint32
	BufferOverruns   uint32
	TimeoutErrors    uint32
	AlignmentErrors  uint32
}

func (*WANErrorNotify) Type() MessageType { return TypeWANErrorNotify }

func (m *WANErrorNotify) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.PeerCallID)
	w.zero(2) // Reserved1
	w.u32(m.CRCErrors)
	w.u32(m.FramingErrors)
	w.u32(m.HardwareOverruns)
	w.u32(m.BufferOverruns)
	w.u32(m.TimeoutErrors)
	w.u32(m.AlignmentErrors)
	return w.b
}

func (m *WANErrorNotify) decode(body []byte) {
	r := reader{body}
	m.PeerCallID = r.u16()
	r.skip(2) // Reserved1
	m.CRCErrors = r.u32()
	m.FramingErrors = r.u32()
	m.HardwareOverruns = r.u32()
	m.BufferOverruns = r.u32()
	m.TimeoutErrors = r.u32()
	m.AlignmentErrors = r.u32()
}

// SetLinkInfo sets a call's PPP async control character maps, RFC 2637
// section 2.15. PeerCallID is the PAC's ID for the call.
type SetLinkInfo struct {
	PeerCallID  uint16
	SendACCM    uint32
	ReceiveACCM uint32
}

func (*SetLinkInfo) Type() MessageType { return TypeSetLinkInfo }

func (m *SetLinkInfo) Append(b []byte) []byte {
	w := newWriter(b, m.Type())
	w.u16(m.PeerCallID)
	w.zero(2) // Reserved1
	w.u32(m.SendACCM)
	w.u32(m.ReceiveACCM)
	return w.b
}

func (m *SetLinkInfo) decode(body []byte) {
	r := reader{body}
	m.PeerCallID = r.u16()
	r.skip(2) // Reserved1
	m.SendACCM = r.u32()
	m.ReceiveACCM = r.u32()
}

// writer appends a message's fields in wire order.
type writer struct{ b []byte }

// newWriter starts a message of type t on b with its header.
func newWriter(b []byte, t MessageType) writer {
	w := writer{slices.Grow(b, t.Len())}
	w.u16(uint16(t.Len()))
	w.u16(controlMessage)
	w.u32(Magic)
	w.u16(uint16(t))
	w.zero(2) // Reserved0
	return w
}

func (w *writer) u8(v uint8)     { w.b = append(w.b, v) }
func (w *writer) u16(v uint16)   { w.b = binary.BigEndian.AppendUint16(w.b, v) }
func (w *writer) u32(v uint32)   { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *writer) bytes(v []byte) { w.b = append(w.b, v...) }
func (w *writer) zero(n int)     { w.b = append(w.b, make([]byte, n)...) }

// reader takes a message body's fields off its front in wire order. Parse
// has checked the body's length, so running short is a bug here and panics.
type reader struct{ b []byte }

func (r *reader) u8() uint8 {
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) bytes(dst []byte) { r.b = r.b[copy(dst, r.b[:len(dst)]):] }
func (r *reader) skip(n int)       { r.b = r.b[n:] }
