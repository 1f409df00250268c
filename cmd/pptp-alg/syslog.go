package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// The daemon's own syslog client: log/syslog would bring the name resolver
// into the router binary (about 200 KiB) to reach a local socket.

// Severities (RFC 5424), in facility daemon.
const (
	facilityDaemon = 3 << 3
	severityErr    = 3
	severityWarn   = 4
	severityInfo   = 6
	severityDebug  = 7
)

// syslogConn sends messages to the local system log.
type syslogConn struct {
	path string
	tag  string // "pptp-alg[PID]"
	mu   sync.Mutex
	conn *net.UnixConn
	buf  []byte
}

// dialSyslog connects to the system log at path. The connection is usable
// even with an error: each message dials again until the log daemon is
// there.
func dialSyslog(path string) (*syslogConn, error) {
	s := &syslogConn{path: path, tag: fmt.Sprintf("pptp-alg[%d]", os.Getpid())}
	return s, s.dial()
}

func (s *syslogConn) dial() error {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		return err
	}
	s.conn = c
	return nil
}

// send writes one message in the form libc's syslog(3) writes: priority,
// time stamp, tag. OpenWrt's logd cuts the 16 bytes after the priority as
// the time stamp without looking at them, so they must be there. If the
// log daemon restarted or was not there yet, the socket is dialled again
// once.
func (s *syslogConn) send(severity int, msg string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = fmt.Appendf(s.buf[:0], "<%d>%s %s: %s", facilityDaemon|severity, time.Now().Format(time.Stamp), s.tag, msg)
	if s.conn != nil {
		if _, err := s.conn.Write(s.buf); err == nil {
			return nil
		}
		s.conn.Close()
		s.conn = nil
	}
	if err := s.dial(); err != nil {
		return err
	}
	_, err := s.conn.Write(s.buf)
	return err
}

func (s *syslogConn) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	return s.conn.Close()
}

// syslogHandler sends each record to the system log as one message with its
// level's severity. procd hands a service's standard error to logd as
// errors, whatever a line says; through /dev/log an Info line is
// daemon.info. The time and level are left out of the text, which syslog
// carries.
type syslogHandler struct {
	debug, info, warn, err slog.Handler
}

// newSyslogHandler formats records as slog's text handler does, with one
// text handler per severity. A line the system log does not take (logd
// down) goes to fallback instead.
func newSyslogHandler(s *syslogConn, fallback io.Writer, level slog.Level) syslogHandler {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
			return slog.Attr{}
		}
		return a
	}}
	text := func(severity int) slog.Handler {
		return slog.NewTextHandler(severityWriter{s, severity, fallback}, opts)
	}
	return syslogHandler{text(severityDebug), text(severityInfo), text(severityWarn), text(severityErr)}
}

// severityWriter sends each write as one message: the text handler writes a
// record in one call.
type severityWriter struct {
	s        *syslogConn
	severity int
	fallback io.Writer
}

func (w severityWriter) Write(p []byte) (int, error) {
	if err := w.s.send(w.severity, strings.TrimSuffix(string(p), "\n")); err != nil {
		return w.fallback.Write(p)
	}
	return len(p), nil
}

func (h syslogHandler) pick(l slog.Level) slog.Handler {
	switch {
	case l >= slog.LevelError:
		return h.err
	case l >= slog.LevelWarn:
		return h.warn
	case l >= slog.LevelInfo:
		return h.info
	}
	return h.debug
}

func (h syslogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.info.Enabled(ctx, l) // all four share the options
}

func (h syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick(r.Level).Handle(ctx, r)
}

func (h syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return syslogHandler{h.debug.WithAttrs(as), h.info.WithAttrs(as), h.warn.WithAttrs(as), h.err.WithAttrs(as)}
}

func (h syslogHandler) WithGroup(name string) slog.Handler {
	return syslogHandler{h.debug.WithGroup(name), h.info.WithGroup(name), h.warn.WithGroup(name), h.err.WithGroup(name)}
}
