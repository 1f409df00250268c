package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/scripts/lab/hdlc"
)

// pppdTunnelAddrs are the addresses pptpd hands out inside the tunnels; the
// echo peer never uses them.
const pppdTunnelAddrs = "localip 10.99.0.1\nremoteip 10.99.0.100-199\n"

// StartPPTPD starts pptpd (Poptop) in the server namespace, listening on
// ServerAddr, with pppecho as its ppp program: every call becomes a loopback
// that first sends one LCP Configure-Request. It returns once pptpd listens
// on tcp/1723. Close stops it.
func (l *Lab) StartPPTPD(ctx context.Context) error {
	l.mu.Lock()
	running := l.pptpd != nil && !l.pptpd.exited()
	l.mu.Unlock()
	if running {
		return errors.New("lab: pptpd already running")
	}
	p, err := l.startPPTPD(ctx, "pptpd", l.Server, l.ServerAddr)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.pptpd = p
	l.mu.Unlock()
	return nil
}

// StartPPTPDOn starts another pptpd, like StartPPTPD's, in namespace ns
// (the router, a LAN host), listening on addr, or on every address if addr
// is the zero Addr. It returns once pptpd listens; the lab's Close stops it.
func (l *Lab) StartPPTPDOn(ctx context.Context, ns string, addr netip.Addr) error {
	_, err := l.startPPTPD(ctx, "pptpd-"+strings.TrimPrefix(ns, l.Name+"-"), ns, addr)
	return err
}

func (l *Lab) startPPTPD(ctx context.Context, name, ns string, addr netip.Addr) (*proc, error) {
	l.mu.Lock()
	l.started++
	dir := filepath.Join(l.Dir, fmt.Sprintf("%s-%d", name, l.started))
	l.mu.Unlock()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// pptpd passes "file OPTIONS" to its ppp program; pppecho ignores it,
	// but pptpd wants the file to exist.
	options := filepath.Join(dir, "options")
	conf := filepath.Join(dir, "pptpd.conf")
	if err := os.WriteFile(options, []byte("# read by pppd, ignored by pppecho\n"), 0o644); err != nil {
		return nil, err
	}
	text := fmt.Sprintf("ppp %s\noption %s\n%s", l.tools.PPPEcho, options, pppdTunnelAddrs)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	argv := []string{"pptpd", "--fg", "--conf", conf, "--pidfile", filepath.Join(dir, "pptpd.pid")}
	if addr.IsValid() {
		argv = append(argv, "--listen", addr.String())
	}
	p, err := l.start(name, ns, nil, argv...)
	if err != nil {
		return nil, err
	}
	return p, waitFor(ctx, p, "pptpd to listen", func() bool { return l.listening(ns, 1723) })
}

// StopPPTPD stops pptpd, freeing tcp/1723 on the server for another peer.
func (l *Lab) StopPPTPD() {
	l.mu.Lock()
	p := l.pptpd
	l.pptpd = nil
	l.mu.Unlock()
	if p != nil {
		p.stop(stopGrace)
	}
}

// listening reports whether a TCP socket in namespace ns listens on port.
func (l *Lab) listening(ns string, port uint16) bool {
	var tcp []byte
	l.Do(ns, func() (err error) {
		// thread-self: /proc/self/net would show the namespace of the
		// process, not of this thread.
		tcp, err = os.ReadFile("/proc/thread-self/net/tcp")
		return err
	})
	want := fmt.Sprintf(":%04X ", port)
	for _, line := range strings.Split(string(tcp), "\n") {
		f := strings.Fields(line)
		// sl local_address rem_address st ...; st 0A is LISTEN.
		if len(f) > 3 && strings.HasSuffix(f[1]+" ", want) && f[3] == "0A" {
			return true
		}
	}
	return false
}

// Client is a pptp-linux client in a LAN host, calling the server. The lab
// holds the other end of its PPP stream: Echo pushes frames through the
// tunnel and counts those that come back from pppecho.
type Client struct {
	Host    Host
	Started time.Time // when pptp was started

	proc      *proc
	conn      net.Conn
	frames    chan []byte   // frames from the tunnel, closed at EOF
	up        chan struct{} // closed when the first frame arrived
	upAt      time.Time
	closed    chan struct{} // closed by Close
	closeOnce sync.Once
	seq       int // numbers the frames Echo sends
}

// StartPPTPClient starts pptp-linux (--nolaunchpppd) in host h, calling the
// server. It returns at once; WaitUp waits for the tunnel. Several clients
// may run at once, in the same host or in different ones: each has its own
// mount namespace and so its own call manager. Close stops it; so does the
// lab's Close.
func (l *Lab) StartPPTPClient(h Host) (*Client, error) {
	return l.StartPPTPClientTo(h, l.ServerAddr)
}

// StartPPTPClientTo is StartPPTPClient calling server instead of the lab's
// server: the router's own pptpd, a port-forwarded LAN host.
func (l *Lab) StartPPTPClientTo(h Host, server netip.Addr) (*Client, error) {
	// pptp-linux uses its stdin both ways (it closes stdout and writes the
	// PPP stream to fd 0, as pppd's pty option arranges), so it gets one
	// end of a socket pair as stdin.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lab: socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "pptp-ppp")
	theirs := os.NewFile(uintptr(fds[1]), "pptp-stdin")
	defer theirs.Close()
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}

	c := &Client{
		Host:    h,
		Started: time.Now(),
		conn:    conn,
		frames:  make(chan []byte, 256),
		up:      make(chan struct{}),
		closed:  make(chan struct{}),
	}
	c.proc, err = l.start("pptp-"+h.Name, h.NS, theirs,
		"pptp", server.String(), "--nolaunchpppd", "--nohostroute")
	if err != nil {
		conn.Close()
		return nil, err
	}
	go c.read()
	return c, nil
}

// read decodes the PPP stream from pptp into c.frames.
func (c *Client) read() {
	defer close(c.frames)
	d := hdlc.NewDecoder(c.conn)
	for {
		f, err := d.Next()
		if errors.Is(err, hdlc.ErrFCS) {
			continue // pptp-linux re-frames what it gets; cannot happen
		}
		if err != nil {
			return
		}
		if c.upAt.IsZero() {
			c.upAt = time.Now()
			close(c.up)
		}
		select {
		case c.frames <- f:
		case <-c.closed:
			return
		}
	}
}

// WaitUp waits until the first PPP frame came out of the tunnel: pppecho's
// LCP Configure-Request, sent by the server as soon as the call is up. From
// then on GRE flows both ways. It returns how long that took since Start.
func (c *Client) WaitUp(ctx context.Context) (time.Duration, error) {
	select {
	case <-c.up:
		return c.upAt.Sub(c.Started), nil
	case <-c.proc.done:
		return 0, fmt.Errorf("%s: tunnel never came up: %w", c.Host.Name, c.proc.failure())
	case <-ctx.Done():
		return 0, fmt.Errorf("%s: tunnel not up: %w", c.Host.Name, ctx.Err())
	}
}

// echoWindow is how many frames Echo keeps in flight. pptp-linux loses
// frames from bursts of a few hundred and exits on bursts of thousands.
const echoWindow = 16

// Echo sends n PPP frames, each unique, through the tunnel, at most
// echoWindow at a time, and waits until they have all come back or ctx ends.
// It returns how many came back; the error says why not all did. Frames that
// are not ours (pppecho's LCP request) are skipped.
func (c *Client) Echo(ctx context.Context, n int) (int, error) {
	pending := map[string]bool{}
	sent := 0
	send := func(k int) error {
		var out bytes.Buffer
		for ; k > 0 && sent < n; k-- {
			f := fmt.Appendf([]byte{0xff, 0x03, 0x00, 0x21}, "pptp-alg lab %s frame %06d", c.Host.Name, c.seq)
			c.seq++
			sent++
			pending[string(withoutAddrCtl(f))] = true
			out.Write(hdlc.Encode(f))
		}
		if out.Len() == 0 {
			return nil
		}
		if _, err := c.conn.Write(out.Bytes()); err != nil {
			return fmt.Errorf("%s: write to pptp: %w", c.Host.Name, err)
		}
		return nil
	}
	if err := send(echoWindow); err != nil {
		return 0, err
	}
	echoed := 0
	for echoed < n {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return echoed, fmt.Errorf("%s: %d of %d frames came back: %w", c.Host.Name, echoed, n, c.proc.failure())
			}
			k := string(withoutAddrCtl(f))
			if !pending[k] {
				continue
			}
			delete(pending, k)
			echoed++
			if err := send(1); err != nil {
				return echoed, err
			}
		case <-ctx.Done():
			return echoed, fmt.Errorf("%s: %d of %d frames came back: %w", c.Host.Name, echoed, n, ctx.Err())
		}
	}
	return echoed, nil
}

// withoutAddrCtl drops the HDLC address and control fields (ff 03), which a
// PPP peer may leave out (RFC 1662 section 3.2, ACFC).
func withoutAddrCtl(f []byte) []byte {
	if len(f) >= 2 && f[0] == 0xff && f[1] == 0x03 {
		return f[2:]
	}
	return f
}

// Close stops pptp-linux (SIGTERM: it closes the call and the control
// connection on the way out) and waits for it.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closed)
		c.proc.stop(stopGrace)
		err = c.conn.Close()
	})
	return err
}

// Exited reports whether pptp-linux has ended, and if so how.
func (c *Client) Exited() (bool, error) {
	if !c.proc.exited() {
		return false, nil
	}
	return true, c.proc.failure()
}

// RunPPTPClient runs pptp-linux in host h, waits for the tunnel, pushes
// frames PPP frames through it, stops the client and returns how many frames
// came back.
func (l *Lab) RunPPTPClient(ctx context.Context, h Host, frames int) (int, error) {
	c, err := l.StartPPTPClient(h)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := c.WaitUp(ctx); err != nil {
		return 0, err
	}
	return c.Echo(ctx, frames)
}
