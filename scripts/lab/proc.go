package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// After SIGTERM a process gets stopGrace to exit, with what it forked, before
// SIGKILL. labinit waits up to linger for the forks once the process itself
// is gone: pptp-linux's call manager hangs up the call after the client
// exits (in about a millisecond here), but one stuck in connect never will.
const (
	stopGrace = 5 * time.Second
	linger    = 2 * time.Second
)

// proc is a long-running lab process. It runs under labinit, pid 1 of a PID
// namespace of its own, so whatever it forks (pptpd's pptpctrl and ppp,
// pptp-linux's call manager) is reaped, and nothing outlives it: see
// scripts/lab/labinit.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  bytes.Buffer  // stdout and stderr, for errors
	log  *net.UnixConn // stands in for /dev/log

	done chan struct{} // closed once cmd.Wait returned
	err  error
}

// start starts argv in namespace ns as a proc named name plus a sequence
// number. stdin may be nil.
func (l *Lab) start(name, ns string, stdin *os.File, argv ...string) (*proc, error) {
	l.mu.Lock()
	l.started++
	name = fmt.Sprintf("%s-%d", name, l.started)
	l.mu.Unlock()
	p := &proc{name: name, done: make(chan struct{})}
	sock := filepath.Join(l.Dir, name+".log.sock")
	var err error
	p.log, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("%s: syslog socket: %w", name, err)
	}
	logDone := make(chan struct{})
	go func() {
		readSyslog(p.log, l.log.With("proc", name))
		close(logDone)
	}()

	args := append([]string{"netns", "exec", ns, l.tools.LabInit,
		"-syslog", sock, "-linger", linger.String()}, argv...)
	// Not CommandContext: a proc outlives the call that started it.
	p.cmd = exec.Command("ip", args...)
	p.cmd.Stdin = stdin
	p.cmd.Stdout = &syncWriter{w: &p.out}
	p.cmd.Stderr = p.cmd.Stdout
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		// ip execs labinit, so labinit is pid 1 of the new namespace.
		Cloneflags: syscall.CLONE_NEWPID,
		// If the test binary dies, so does labinit, and the kernel
		// kills everything else in the namespace.
		Pdeathsig: syscall.SIGKILL,
	}
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		p.log.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		// Done means done logging too: a test's logger may not be
		// used after the test.
		p.log.Close()
		<-logDone
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	l.log.Debug("started", "proc", name, "ns", ns, "pid", p.cmd.Process.Pid, "argv", strings.Join(argv, " "))
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// failure describes how the process ended, with its output.
func (p *proc) failure() error {
	<-p.done
	out := strings.TrimSpace(p.output())
	err := p.err
	if err == nil {
		err = errors.New("exited")
	}
	if out != "" {
		return fmt.Errorf("%s: %w: %s", p.name, err, out)
	}
	return fmt.Errorf("%s: %w", p.name, err)
}

func (p *proc) output() string {
	w := p.cmd.Stdout.(*syncWriter)
	w.mu.Lock()
	defer w.mu.Unlock()
	return p.out.String()
}

// stop sends SIGTERM (labinit passes it on), and SIGKILL if the namespace
// has not emptied after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// readSyslog logs each datagram on c, a socket standing in for /dev/log,
// until c is closed.
func readSyslog(c *net.UnixConn, log *slog.Logger) {
	buf := make([]byte, 8192)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		log.Info(syslogText(buf[:n]))
	}
}

// syslogText strips the priority and timestamp from a syslog(3) message
// ("<30>Nov 21 23:58:01 pptp[1]: text"), leaving "pptp[1]: text".
func syslogText(b []byte) string {
	s := strings.TrimRight(string(b), "\n\x00")
	if strings.HasPrefix(s, "<") {
		if i := strings.IndexByte(s, '>'); i > 0 {
			s = s[i+1:]
		}
	}
	if len(s) > 16 && s[3] == ' ' && s[6] == ' ' && s[9] == ':' && s[15] == ' ' {
		if _, err := time.Parse(time.Stamp, s[:15]); err == nil {
			s = s[16:]
		}
	}
	return s
}

// syncWriter serialises writes from the stdout and stderr copiers.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *syncWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

// waitFor polls cond every 10 ms until it holds, ctx ends or p exits.
func waitFor(ctx context.Context, p *proc, what string, cond func() bool) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-p.done:
			return fmt.Errorf("waiting for %s: %w", what, p.failure())
		case <-t.C:
		}
	}
	return nil
}

// Process is a long-running process the lab started for a test or the
// demo: the pptp-alg daemon, a simulator. The lab's Close stops it too.
type Process struct{ p *proc }

// Start starts argv in namespace ns under labinit, like the lab's own
// peers. stdin may be nil. Output collects stdout and stderr.
func (l *Lab) Start(name, ns string, stdin *os.File, argv ...string) (*Process, error) {
	p, err := l.start(name, ns, stdin, argv...)
	if err != nil {
		return nil, err
	}
	return &Process{p: p}, nil
}

// Output is what the process wrote so far.
func (p *Process) Output() string { return p.p.output() }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool { return p.p.exited() }

// Wait waits for the process to end by itself; the error says how it
// ended if it did not exit 0.
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.p.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if p.p.err != nil {
		return p.p.failure()
	}
	return nil
}

// Stop sends SIGTERM and waits, with SIGKILL after a grace period; the
// error says how it ended if it did not exit 0.
func (p *Process) Stop() error {
	p.p.stop(stopGrace)
	if p.p.err != nil {
		return p.p.failure()
	}
	return nil
}

// WaitFor polls cond until it holds, ctx ends or the process exits.
func (p *Process) WaitFor(ctx context.Context, what string, cond func() bool) error {
	return waitFor(ctx, p.p, what, cond)
}
