package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listenLog stands in for logd's /dev/log.
func listenLog(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	os.Remove(path)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readLog(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 2048)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("no message: %v", err)
	}
	return string(b[:n])
}

// TestSyslogHandler: each level arrives with its severity in facility
// daemon, with the 16-byte time stamp logd cuts off, the tag, and the text
// handler's attributes but not its time or level; after logd restarts the
// next line dials again; with no logd a line goes to the fallback.
func TestSyslogHandler(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	ln := listenLog(t, path)
	s, err := dialSyslog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var fallback bytes.Buffer
	log := slog.New(newSyslogHandler(s, &fallback, slog.LevelDebug)).With("client", "192.168.1.11")
	tag := fmt.Sprintf(" pptp-alg[%d]: ", os.Getpid())
	for _, tc := range []struct {
		level slog.Level
		pri   string
	}{
		{slog.LevelDebug, "<31>"},
		{slog.LevelInfo, "<30>"},
		{slog.LevelWarn, "<28>"},
		{slog.LevelError, "<27>"},
	} {
		log.Log(t.Context(), tc.level, "outgoing call", "nat_call_id", 7)
		got := readLog(t, ln)
		rest, ok := strings.CutPrefix(got, tc.pri)
		if !ok || len(rest) < 16 || rest[15] != ' ' {
			t.Errorf("%v: %q: want %s and a time stamp of 16 bytes", tc.level, got, tc.pri)
			continue
		}
		if want := tag[1:] + `msg="outgoing call" client=192.168.1.11 nat_call_id=7`; rest[16:] != want {
			t.Errorf("%v: %q after the time stamp, want %q", tc.level, rest[16:], want)
		}
	}

	// logd restarts: a new socket at the same path.
	ln.Close()
	ln = listenLog(t, path)
	log.Info("after restart")
	if got := readLog(t, ln); !strings.HasSuffix(got, tag+`msg="after restart" client=192.168.1.11`) {
		t.Errorf("after logd's restart: %q", got)
	}

	// No logd at all.
	ln.Close()
	os.Remove(path)
	log.Warn("nobody listens")
	if got := fallback.String(); got != `msg="nobody listens" client=192.168.1.11`+"\n" {
		t.Errorf("fallback got %q", got)
	}
	// logd comes back.
	ln = listenLog(t, path)
	log.Info("back")
	if got := readLog(t, ln); !strings.HasSuffix(got, tag+`msg=back client=192.168.1.11`) {
		t.Errorf("after logd came back: %q", got)
	}
}

// TestSyslogBeforeLogd: a daemon started before the log daemon logs to
// the fallback, then to the system log once it is there.
func TestSyslogBeforeLogd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	s, err := dialSyslog(path)
	if err == nil {
		t.Fatal("dialSyslog: no error with no log daemon")
	}
	defer s.Close()
	var fallback bytes.Buffer
	log := slog.New(newSyslogHandler(s, &fallback, slog.LevelInfo))
	log.Info("early")
	if got := fallback.String(); got != `msg=early`+"\n" {
		t.Errorf("fallback got %q", got)
	}
	ln := listenLog(t, path)
	log.Info("later")
	if got := readLog(t, ln); !strings.HasSuffix(got, `: msg=later`) {
		t.Errorf("once logd is there: %q", got)
	}
}
