// Command labinit is pid 1 of the PID namespace the lab gives each
// long-running process (pptpd, pptp-linux). It prepares the mount namespace
// it runs in, starts the command, forwards SIGTERM, SIGINT and SIGHUP to it,
// and reaps everything in the namespace. After the command exits it waits
// for the command's descendants to finish too, up to -linger: pptp-linux's
// call manager outlives the client it forks from, and hangs up the call
// (Call-Clear-Request, Stop-Control-Connection-Request, RFC 2637 section 2)
// only if it is allowed to. When labinit exits, the kernel kills whatever is
// left in the namespace, so nothing a lab starts can outlive it.
//
// Usage: labinit [-syslog SOCKET] [-linger DURATION] COMMAND [ARG...]
//
// The mount namespace (ip netns exec makes a private one) gets:
//   - a fresh /run (and so /var/run): pptp-linux keeps one call manager per
//     server behind a unix socket in /var/run/pptp, and clients in
//     different hosts must not find each other's;
//   - a small /dev of its own with a private devpts instance for ptys, and
//     /dev/log bound to SOCKET: pptpd and pptp-linux log only to syslog.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	syslog := flag.String("syslog", "", "unix datagram `socket` to bind on /dev/log")
	linger := flag.Duration("linger", 5*time.Second, "how long to wait for the command's descendants after it exits")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: labinit [-syslog SOCKET] [-linger DURATION] COMMAND [ARG...]")
		os.Exit(2)
	}
	if err := setupMounts(*syslog); err != nil {
		fmt.Fprintln(os.Stderr, "labinit:", err)
		os.Exit(1)
	}
	os.Exit(run(flag.Args(), *linger))
}

// run starts argv, reaps until argv's process and all orphans have exited
// (or linger passed after argv's process exited) and returns argv's exit
// code.
func run(argv []string, linger time.Duration) int {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, unix.SIGTERM, unix.SIGINT, unix.SIGHUP)

	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "labinit:", err)
		return 127
	}
	p, err := os.StartProcess(path, argv, &os.ProcAttr{
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "labinit:", err)
		return 127
	}
	mainPID := p.Pid

	// Reap with wait4(-1) rather than p.Wait: as pid 1 we inherit every
	// orphan in the namespace and must collect them all.
	type exit struct {
		pid    int
		status unix.WaitStatus
	}
	exits := make(chan exit)
	noChildren := make(chan struct{})
	go func() {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil { // ECHILD: nothing left
				close(noChildren)
				return
			}
			exits <- exit{pid, ws}
		}
	}()

	code := -1
	var lingerC <-chan time.Time
	for {
		select {
		case s := <-signals:
			if code < 0 {
				p.Signal(s)
			}
		case e := <-exits:
			if e.pid == mainPID {
				code = exitCode(e.status)
				lingerC = time.After(linger)
			}
		case <-noChildren:
			return max(code, 0)
		case <-lingerC:
			return code
		}
	}
}

func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// setupMounts gives this mount namespace its own /run and /dev.
func setupMounts(syslog string) error {
	if err := mount("lab-run", "/run", "tmpfs", unix.MS_NOSUID, "mode=0755,size=1m"); err != nil {
		return err
	}
	if err := mount("lab-dev", "/dev", "tmpfs", unix.MS_NOSUID, "mode=0755,size=1m"); err != nil {
		return err
	}
	if err := makeDevices(); err != nil {
		return err
	}
	if err := os.Mkdir("/dev/pts", 0o755); err != nil {
		return err
	}
	// A devpts instance of our own: ptys opened here are invisible
	// outside, and ours are not mixed with the host's.
	if err := mount("lab-pts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"); err != nil {
		return err
	}
	for link, target := range map[string]string{
		"/dev/ptmx":   "pts/ptmx",
		"/dev/fd":     "/proc/self/fd",
		"/dev/stdin":  "fd/0",
		"/dev/stdout": "fd/1",
		"/dev/stderr": "fd/2",
	} {
		if err := os.Symlink(target, link); err != nil {
			return err
		}
	}
	if syslog == "" {
		return nil
	}
	if err := os.WriteFile("/dev/log", nil, 0o666); err != nil {
		return err
	}
	return mount(syslog, "/dev/log", "", unix.MS_BIND, "")
}

func mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", source, target, err)
	}
	return nil
}

func makeDevices() error {
	for _, d := range []struct {
		name         string
		major, minor uint32
	}{
		{"null", 1, 3}, {"zero", 1, 5}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
	} {
		path := "/dev/" + d.name
		if err := unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		// mknod applies the umask.
		if err := os.Chmod(path, 0o666); err != nil {
			return err
		}
	}
	return nil
}
