package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/scripts/lab/hdlc"
)

// peer is a process on the box's LAN or WAN side (pptpd, pptp-linux,
// udhcpd). It runs under the lab's labinit, PID 1 of a PID namespace of its
// own with its own /run and /dev, so whatever it forks ends with it, and
// pptp-linux clients in different hosts do not share a call manager.
type peer struct {
	name string
	cmd  *exec.Cmd
	log  *net.UnixConn // stands in for /dev/log
	out  syncBuffer    // stdout, stderr and syslog
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startPeer starts argv in namespace ns under labinit.
func (b *box) startPeer(name, ns string, stdin *os.File, argv ...string) (*peer, error) {
	b.mu.Lock()
	name = fmt.Sprintf("%s-%d", name, len(b.procs)+1)
	b.mu.Unlock()
	p := &peer{name: name, done: make(chan struct{})}
	sock := filepath.Join(b.tmp, name+".log")
	var err error
	p.log, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := p.log.Read(buf)
			if err != nil {
				return
			}
			fmt.Fprintf(&p.out, "syslog: %s\n", bytes.TrimRight(buf[:n], "\n\x00"))
		}
	}()
	args := append([]string{"netns", "exec", ns, filepath.Join(b.tools, "labinit"), "-syslog", sock, "-linger", "2s"}, argv...)
	p.cmd = exec.Command("ip", args...)
	p.cmd.Stdin = stdin
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.Env = b.env()
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		p.log.Close()
		return nil, err
	}
	go func() {
		p.err = p.cmd.Wait()
		p.log.Close()
		close(p.done)
	}()
	b.mu.Lock()
	b.procs = append(b.procs, p)
	b.mu.Unlock()
	return p, nil
}

func (p *peer) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM (labinit passes it on) and SIGKILL after 5 s.
func (p *peer) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// startPPTPD starts pptpd on the WAN side with pppecho as its ppp program:
// every call becomes a loopback.
func (b *box) startPPTPD(ctx context.Context) error {
	dir := filepath.Join(b.run, "pptpd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	options := filepath.Join(dir, "options")
	conf := filepath.Join(dir, "pptpd.conf")
	os.WriteFile(options, []byte("# read by pppd, ignored by pppecho\n"), 0o644)
	text := fmt.Sprintf("ppp %s\noption %s\nlocalip 10.99.0.1\nremoteip 10.99.0.100-199\n",
		filepath.Join(b.tools, "pppecho"), options)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return err
	}
	p, err := b.startPeer("pptpd", b.server, nil, "pptpd", "--fg", "--conf", conf,
		"--pidfile", filepath.Join(dir, "pptpd.pid"), "--listen", serverAddr)
	if err != nil {
		return err
	}
	return b.waitFor(ctx, 10*time.Second, "pptpd to listen", func() (bool, string) {
		if p.exited() {
			return false, p.out.String()
		}
		return listening(b.server, 1723), ""
	})
}

// client is a pptp-linux client in a LAN host; the harness holds the other
// end of its PPP stream.
type client struct {
	h      *host
	p      *peer
	conn   net.Conn
	frames chan []byte // PPP frames out of the tunnel; closed at EOF
	up     chan struct{}
	seq    int
	once   sync.Once
}

// dial starts pptp-linux in host h, calling the server.
func (b *box) dial(h *host) (*client, error) {
	// pptp-linux writes the PPP stream to its stdin, as pppd's pty
	// option arranges, so it gets one end of a socket pair.
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ours := os.NewFile(uintptr(fds[0]), "ppp")
	theirs := os.NewFile(uintptr(fds[1]), "pptp-stdin")
	defer theirs.Close()
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, err
	}
	c := &client{h: h, conn: conn, frames: make(chan []byte, 256), up: make(chan struct{})}
	c.p, err = b.startPeer("pptp-"+h.name, h.ns, theirs, "pptp", serverAddr, "--nolaunchpppd", "--nohostroute")
	if err != nil {
		conn.Close()
		return nil, err
	}
	go func() {
		defer close(c.frames)
		d := hdlc.NewDecoder(conn)
		first := true
		for {
			f, err := d.Next()
			if errors.Is(err, hdlc.ErrFCS) {
				continue
			}
			if err != nil {
				return
			}
			if first {
				close(c.up)
				first = false
			}
			c.frames <- f
		}
	}()
	return c, nil
}

// waitUp waits for the first frame out of the tunnel (pppecho's LCP
// Configure-Request): the call is up and GRE came through the box.
func (c *client) waitUp(ctx context.Context, limit time.Duration) error {
	select {
	case <-c.up:
		return nil
	case <-c.p.done:
		return fmt.Errorf("%s: pptp exited before the tunnel came up: %v\n%s", c.h.name, c.p.err, tail(c.p.out.String(), 8))
	case <-time.After(limit):
		return fmt.Errorf("%s: no tunnel after %s\n%s", c.h.name, limit, tail(c.p.out.String(), 8))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// echo sends n numbered PPP frames through the tunnel, 8 at a time, and
// returns how many came back within limit.
func (c *client) echo(n int, limit time.Duration) (int, error) {
	deadline := time.After(limit)
	pending := map[string]bool{}
	sent, back := 0, 0
	send := func(k int) error {
		var out bytes.Buffer
		for ; k > 0 && sent < n; k-- {
			f := fmt.Appendf([]byte{0xff, 0x03, 0x00, 0x21}, "openwrt-box %s frame %06d", c.h.name, c.seq)
			c.seq++
			sent++
			pending[string(f[2:])] = true
			out.Write(hdlc.Encode(f))
		}
		if out.Len() == 0 {
			return nil
		}
		_, err := c.conn.Write(out.Bytes())
		return err
	}
	if err := send(8); err != nil {
		return 0, err
	}
	for back < n {
		select {
		case f, ok := <-c.frames:
			if !ok {
				return back, fmt.Errorf("%s: tunnel closed after %d of %d frames\n%s", c.h.name, back, n, tail(c.p.out.String(), 8))
			}
			if len(f) >= 2 && f[0] == 0xff && f[1] == 0x03 {
				f = f[2:]
			}
			if !pending[string(f)] {
				continue
			}
			delete(pending, string(f))
			back++
			if err := send(1); err != nil {
				return back, err
			}
		case <-deadline:
			return back, fmt.Errorf("%s: %d of %d frames came back in %s", c.h.name, back, n, limit)
		}
	}
	return back, nil
}

func (c *client) close() {
	c.once.Do(func() {
		c.p.stop()
		c.conn.Close()
	})
}

// tunnel dials from h, waits for the tunnel and pushes n frames through it.
// The client stays up; the caller closes it.
func (b *box) tunnel(ctx context.Context, h *host, n int) (*client, error) {
	c, err := b.dial(h)
	if err != nil {
		return nil, err
	}
	if err := c.waitUp(ctx, 15*time.Second); err != nil {
		c.close()
		return nil, err
	}
	if _, err := c.echo(n, 10*time.Second); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}
