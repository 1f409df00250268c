package alg

import (
	"bytes"
	"encoding/binary"
)

// Header fields that are the same in every control message.
var (
	controlMessageBytes = binary.BigEndian.AppendUint16(nil, controlMessage)
	magicBytes          = binary.BigEndian.AppendUint32(nil, Magic)
)

// Frame reports the length of the first whole control message at the start
// of b. It returns (0, nil) while b holds only part of a message (including
// fewer than HeaderLen bytes), and an error, one of ErrBadLength,
// ErrNotControl, ErrBadMagic or ErrUnknownType, as soon as the bytes present
// prove the stream is malformed. It never reads past len(b) and never
// allocates.
//
// The errors are the bare sentinels, because wrapping them would allocate;
// callers add the context.
func Frame(b []byte) (n int, err error) {
	// Each field is checked as far as it has arrived, so a stream that is not
	// PPTP fails at its first wrong byte rather than leaving the relay waiting
	// for a header that can never make sense.
	switch {
	case len(b) >= 1 && b[0] != 0: // no control message reaches 256 bytes
		return 0, ErrBadLength
	case len(b) >= 2 && !isMessageLen(int(b[1])):
		return 0, ErrBadLength
	case !agrees(b, 2, controlMessageBytes):
		return 0, ErrNotControl
	case !agrees(b, 4, magicBytes):
		return 0, ErrBadMagic
	case len(b) >= 9 && b[8] != 0: // no control message type reaches 256
		return 0, ErrUnknownType
	case len(b) < 10:
		return 0, nil
	}
	// Reserved0 (bytes 10 and 11) is not checked: refusing a peer that sets
	// it would gain the relay nothing.
	t := MessageType(binary.BigEndian.Uint16(b[8:]))
	n = int(binary.BigEndian.Uint16(b))
	switch {
	case t.Len() == 0:
		return 0, ErrUnknownType
	case n != t.Len():
		return 0, ErrBadLength
	case len(b) < n:
		return 0, nil
	}
	return n, nil
}

// agrees reports whether the part of b present from off on matches the
// start of want.
func agrees(b []byte, off int, want []byte) bool {
	if len(b) <= off {
		return true
	}
	got := b[off:min(len(b), off+len(want))]
	return bytes.Equal(got, want[:len(got)])
}
