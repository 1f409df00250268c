package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/pptp-alg/pptp-alg/alg"
)

// Field values that nobody checks, chosen to look like real peers.
const (
	protocolVersion     = 0x0100 // RFC 2637 section 2.1
	framingAsyncSync    = 3
	bearerAnalogDigital = 3
	connectSpeed        = 64000
	recvWindow          = 64
	cdnResultRequest    = 4 // Call-Disconnect-Notify: Call-Clear-Request received
	resultOK            = 1 // Start-Control-Connection-Reply, Stop reply, Echo-Reply
)

// controlReader frames a control connection's byte stream into messages,
// however the peer or a router in between cut it into segments.
type controlReader struct {
	r   io.Reader
	buf []byte
}

func newControlReader(r io.Reader) *controlReader {
	return &controlReader{r: r, buf: make([]byte, 0, 4096)}
}

// next returns the next message, reading as much as it needs.
func (c *controlReader) next() (alg.Message, error) {
	for {
		n, err := alg.Frame(c.buf)
		if err != nil {
			return nil, fmt.Errorf("control stream: %w", err)
		}
		if n > 0 {
			m, err := alg.Parse(c.buf[:n])
			c.buf = c.buf[:copy(c.buf, c.buf[n:])]
			if err != nil {
				return nil, fmt.Errorf("control stream: %w", err)
			}
			return m, nil
		}
		if len(c.buf) == cap(c.buf) {
			panic("pptpsim: control buffer full without a whole message")
		}
		k, err := c.r.Read(c.buf[len(c.buf):cap(c.buf)])
		c.buf = c.buf[:len(c.buf)+k]
		if k == 0 && err != nil {
			return nil, err
		}
	}
}

// buffered reports whether a whole message is waiting, so that next will
// not block. The server flushes its replies once nothing is left.
func (c *controlReader) buffered() bool {
	n, _ := alg.Frame(c.buf)
	return n > 0
}

// segmentMode says how control messages are cut into write() calls, and so
// into TCP segments (TCP_NODELAY is on).
type segmentMode string

const (
	segmentNormal   segmentMode = "normal"   // one write per message
	segmentSplit    segmentMode = "split"    // each message in small chunks
	segmentCoalesce segmentMode = "coalesce" // a batch of messages in one write
)

func parseSegmentMode(s string) (segmentMode, error) {
	switch m := segmentMode(s); m {
	case segmentNormal, segmentSplit, segmentCoalesce:
		return m, nil
	}
	return "", fmt.Errorf("--segment %q: want normal, split or coalesce", s)
}

// splitChunks are the chunk sizes of split mode, used in turn. They are
// uneven so that the header, call IDs and the message boundary all land
// in different segments.
var splitChunks = []int{1, 3, 7, 2, 11, 5, 17}

// splitPause lets each chunk leave as its own segment.
const splitPause = 2 * time.Millisecond

// controlWriter writes control messages in the configured segment mode.
// Its mutex keeps a split message whole against concurrent senders.
type controlWriter struct {
	mu    sync.Mutex
	w     io.Writer
	mode  segmentMode
	pause func()
}

func newControlWriter(w io.Writer, mode segmentMode) *controlWriter {
	return &controlWriter{w: w, mode: mode, pause: func() { time.Sleep(splitPause) }}
}

// send writes msgs, as one batch in coalesce mode.
func (c *controlWriter) send(msgs ...alg.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.mode {
	case segmentCoalesce:
		var b []byte
		for _, m := range msgs {
			b = m.Append(b)
		}
		return c.write(b, msgs...)
	case segmentSplit:
		for _, m := range msgs {
			b := m.Append(nil)
			for i := 0; len(b) > 0; i++ {
				n := min(splitChunks[i%len(splitChunks)], len(b))
				if i > 0 {
					c.pause()
				}
				if err := c.write(b[:n], m); err != nil {
					return err
				}
				b = b[n:]
			}
		}
		return nil
	default:
		for _, m := range msgs {
			if err := c.write(m.Append(nil), m); err != nil {
				return err
			}
		}
		return nil
	}
}

func (c *controlWriter) write(b []byte, msgs ...alg.Message) error {
	if _, err := c.w.Write(b); err != nil {
		names := make([]string, len(msgs))
		for i, m := range msgs {
			names[i] = m.Type().String()
		}
		return fmt.Errorf("write %s: %w", strings.Join(names, ", "), err)
	}
	return nil
}

// emitter prints results as JSON lines, one object per event, with the
// keys in the order given. Lines from concurrent goroutines never mix.
type emitter struct {
	mu sync.Mutex
	w  io.Writer
}

// emit writes {"event":event,k1:v1,...}; kv alternates keys and values.
func (e *emitter) emit(event string, kv ...any) {
	if len(kv)%2 != 0 {
		panic("pptpsim: emit needs key, value pairs")
	}
	b := append([]byte(`{"event":`), quote(event)...)
	for i := 0; i < len(kv); i += 2 {
		v, err := json.Marshal(kv[i+1])
		if err != nil {
			panic(fmt.Sprintf("pptpsim: event %s key %v: %v", event, kv[i], err))
		}
		b = append(b, ',')
		b = append(b, quote(kv[i].(string))...)
		b = append(b, ':')
		b = append(b, v...)
	}
	b = append(b, "}\n"...)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.w.Write(b) // a broken stdout leaves nobody to tell
}

func quote(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}
