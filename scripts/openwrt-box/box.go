package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

// The box's network: a router with two LAN ports on br-lan, a WAN port, a
// port for a second LAN network (office) and one for a guest network. Each
// port's peer is a host namespace.
//
//	h1 192.168.1.11 ── lan1 ┐
//	h2 192.168.1.12 ── lan2 ┴ br-lan 192.168.1.1   box   wan (DHCP) ── 203.0.113.2 server (pptpd, udhcpd)
//	o1 192.168.2.11 ── lan3   office 192.168.2.1
//	g1 192.168.3.11 ── lan4   guest  192.168.3.1
const (
	serverAddr = "203.0.113.2"
	lanAddr    = "192.168.1.1"
	nsPrefix   = "owbox"
)

// host is a namespace on one of the box's ports.
type host struct {
	name, ns, port, addr, gw string
}

// box is a booted OpenWrt userland and its network.
type box struct {
	*work
	name     string // unique, the start of every namespace name
	ns       string // the box's network namespace
	server   string // the WAN side's namespace
	hosts    map[string]*host
	rootfs   string
	out      string // screenshots and page texts
	tools    string // pppecho, labinit, mkapk
	pkgs     string // the packages under test
	node     string // node_modules with playwright-core
	pid      int    // procd, PID 1 of the box, in the host's PID namespace
	unshare  *exec.Cmd
	exited   chan struct{} // closed when unshare has exited
	bootTime time.Duration
	verbose  bool

	mu    sync.Mutex
	procs []*peer // pptpd, udhcpd, clients: stopped by close
}

// prepare lays out the box's root, builds the lab tools and the packages,
// installs Chromium's driver and makes the network. close undoes it.
func (w *work) prepare(ctx context.Context, stage, srcDir string) (*box, error) {
	var tag [2]byte
	rand.Read(tag[:])
	name := fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), hex.EncodeToString(tag[:]))
	b := &box{
		work:   w,
		name:   name,
		ns:     name + "-box",
		server: name + "-wan",
		rootfs: filepath.Join(w.run, "rootfs"),
		out:    filepath.Join(w.run, "out"),
		tools:  filepath.Join(w.run, "tools"),
		pkgs:   filepath.Join(w.run, "pkgs"),
		node:   filepath.Join(w.dir, "node"),
		hosts: map[string]*host{
			"h1": {name: "h1", port: "lan1", addr: "192.168.1.11", gw: lanAddr},
			"h2": {name: "h2", port: "lan2", addr: "192.168.1.12", gw: lanAddr},
			"o1": {name: "o1", port: "lan3", addr: "192.168.2.11", gw: "192.168.2.1"},
			"g1": {name: "g1", port: "lan4", addr: "192.168.3.11", gw: "192.168.3.1"},
		},
	}
	for _, h := range b.hosts {
		h.ns = name + "-" + h.name
	}
	for _, d := range []string{b.out, b.tools, b.pkgs, filepath.Join(w.run, "home")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	removeStale()

	t := time.Now()
	if _, err := w.command(ctx, w.repo, "go", "build", "-o", b.tools+"/",
		"./scripts/pppecho", "./scripts/lab/labinit", "./scripts/firmware/mkapk"); err != nil {
		return nil, err
	}
	// The box is x86_64, as `apk --print-arch` says in it: the packages'
	// arch, and linux/amd64 for the daemon, built once for both formats.
	if _, err := w.command(ctx, w.repo, "scripts/build-router.sh", "-o", b.tools, "linux/amd64"); err != nil {
		return nil, err
	}
	bins, _ := filepath.Glob(filepath.Join(b.tools, "pptp-alg-*"))
	if len(bins) != 1 {
		return nil, fmt.Errorf("build-router.sh made %d binaries in %s, want 1", len(bins), b.tools)
	}
	for _, format := range []string{"apk", "ipk"} {
		if _, err := w.command(ctx, w.repo, "scripts/openwrt-package.sh", "--arch", "x86_64",
			"--format", format, "--bin", bins[0], "-o", b.pkgs); err != nil {
			return nil, err
		}
	}
	if _, err := w.command(ctx, w.repo, "env", "MKAPK="+filepath.Join(b.tools, "mkapk"),
		"scripts/openwrt-box/rootfs.sh", srcDir, stage, b.rootfs); err != nil {
		return nil, err
	}
	if err := b.installDriver(ctx); err != nil {
		return nil, err
	}
	fmt.Printf("openwrt-box: root, packages and tools ready in %s\n", time.Since(t).Round(100*time.Millisecond))
	if err := b.network(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// installDriver installs playwright-core into the work directory once; it
// drives Debian's chromium and downloads no browser of its own.
func (b *box) installDriver(ctx context.Context) error {
	if _, err := exec.LookPath("chromium"); err != nil {
		return errors.New("chromium not found (scripts/deps.sh installs it)")
	}
	marker := filepath.Join(b.node, "node_modules", ".box-"+playwrightVersion)
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	if err := os.MkdirAll(b.node, 0o755); err != nil {
		return err
	}
	if _, err := b.command(ctx, b.node, "npm", "install", "--prefix", b.node, "--no-audit", "--no-fund",
		"--no-save", "--loglevel=error", playwrightVersion); err != nil {
		return err
	}
	return os.WriteFile(marker, nil, 0o644)
}

// network makes the namespaces and links, and starts the WAN side's DHCP
// server: the box's wan takes its address by DHCP, as a router's does.
func (b *box) network(ctx context.Context) error {
	all := []string{b.ns, b.server}
	for _, h := range b.hosts {
		all = append(all, h.ns)
	}
	for _, ns := range all {
		if err := lab.Run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
	}
	var s strings.Builder
	fmt.Fprintf(&s, "link add wan type veth peer name eth0 netns %s\n", b.server)
	for _, h := range b.hosts {
		fmt.Fprintf(&s, "link add %s type veth peer name eth0 netns %s\n", h.port, h.ns)
	}
	if err := lab.IPBatch(ctx, b.ns, s.String()); err != nil {
		return err
	}
	if err := lab.IPBatch(ctx, b.server, "link set lo up\naddr add "+serverAddr+"/24 dev eth0\nlink set eth0 up\n"); err != nil {
		return err
	}
	for _, h := range b.hosts {
		if err := lab.IPBatch(ctx, h.ns, fmt.Sprintf("link set lo up\naddr add %s/24 dev eth0\nlink set eth0 up\nroute add default via %s\n",
			h.addr, h.gw)); err != nil {
			return err
		}
	}
	dir := filepath.Join(b.run, "udhcpd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	conf := filepath.Join(dir, "udhcpd.conf")
	text := fmt.Sprintf("start 203.0.113.100\nend 203.0.113.150\ninterface eth0\noption subnet 255.255.255.0\n"+
		"option router %s\nlease_file %s/leases\npidfile %s/pid\n", serverAddr, dir, dir)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(dir, "leases"), nil, 0o644)
	_, err := b.startPeer("udhcpd", b.server, nil, "busybox", "udhcpd", "-f", conf)
	return err
}

// boot starts procd as PID 1 of new PID, mount, UTS and IPC namespaces in
// the box's network namespace, and waits for the router to be up: lan on
// br-lan, wan with a DHCP lease, fw4 loaded, LuCI answering.
func (b *box) boot(ctx context.Context) error {
	t := time.Now()
	console := filepath.Join(b.run, "console.log")
	if err := os.WriteFile(console, nil, 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(b.run, "boot.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	// --kill-child: if unshare dies (and it dies with this process), procd
	// gets SIGKILL, and with it the whole PID namespace.
	b.unshare = exec.Command("ip", "netns", "exec", b.ns, "unshare", "--mount", "--pid", "--uts", "--ipc",
		"--fork", "--kill-child", "--propagation", "private",
		filepath.Join(b.repo, "scripts/openwrt-box/boot.sh"), b.rootfs, console)
	b.unshare.Stdout, b.unshare.Stderr = logf, logf
	b.unshare.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.unshare.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	b.exited = exited
	go func() { b.unshare.Wait(); close(exited) }()
	// procd is unshare's one child.
	children := fmt.Sprintf("/proc/%d/task/%d/children", b.unshare.Process.Pid, b.unshare.Process.Pid)
	for b.pid == 0 {
		if c, _ := os.ReadFile(children); len(c) > 0 {
			b.pid, _ = strconv.Atoi(strings.Fields(string(c))[0])
			break
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(filepath.Join(b.run, "boot.log"))
			return fmt.Errorf("the box exited at once: %s", out)
		case <-time.After(10 * time.Millisecond):
		}
	}
	err = b.waitFor(ctx, 60*time.Second, "the router to come up (lan, wan by DHCP, fw4, LuCI)", func() (bool, string) {
		out, _ := b.sh(ctx, `echo lan $(ifstatus lan | jsonfilter -e '@.up')
			echo wan $(ifstatus wan | jsonfilter -e '@["ipv4-address"][0].address')
			nft list table inet fw4 >/dev/null 2>&1 && echo fw4 loaded
			netstat -ltn | grep -q ':80 ' && echo luci listening`)
		return strings.Contains(out, "lan true") && strings.Contains(out, "wan 203.0.113.") &&
			strings.Contains(out, "fw4 loaded") && strings.Contains(out, "luci listening"), out
	})
	b.bootTime = time.Since(t)
	return err
}

// waitFor polls cond every 200 ms until it holds or limit passes; the error
// carries cond's last words.
func (b *box) waitFor(ctx context.Context, limit time.Duration, what string, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last string
	for {
		ok, s := cond()
		if ok {
			return nil
		}
		last = s
		select {
		case <-ctx.Done():
			return fmt.Errorf("waited %s for %s; last: %s", limit, what, strings.TrimSpace(last))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sh runs a shell script in the box as root logged in on it would: in
// every namespace of procd, with OpenWrt's PATH. It returns the output; a
// non-zero exit is an error holding the output.
func (b *box) sh(ctx context.Context, script string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(b.pid), "-m", "-p", "-n", "-u", "-i", "-r", "-w",
		"env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "sh", "-c", script)
	out, err := cmd.CombinedOutput()
	if b.verbose {
		fmt.Printf("   box$ %s\n%s", strings.TrimSpace(script), indent(string(out)))
	}
	if err != nil {
		return string(out), fmt.Errorf("in the box: %s: %w: %s", oneLine(script), err, strings.TrimSpace(tail(string(out), 10)))
	}
	return string(out), nil
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "      " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n      ") + "\n"
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// put copies a host file into the box's filesystem (its /tmp is its own
// tmpfs, seen through procd's root).
func (b *box) put(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	p := filepath.Join(fmt.Sprintf("/proc/%d/root", b.pid), dst)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o644)
}

// close stops every peer, kills procd (which ends the box's PID namespace
// and so all its processes and mounts) and removes the namespaces.
func (b *box) close() {
	b.mu.Lock()
	procs := b.procs
	b.procs = nil
	b.mu.Unlock()
	for _, p := range procs {
		p.stop()
	}
	if b.pid > 0 {
		syscall.Kill(b.pid, syscall.SIGKILL)
	}
	if b.exited != nil {
		select {
		case <-b.exited:
		case <-time.After(5 * time.Second):
			b.unshare.Process.Kill()
			<-b.exited
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := []string{b.ns, b.server}
	for _, h := range b.hosts {
		names = append(names, h.ns)
	}
	for _, ns := range names {
		removeNamespace(ctx, ns)
	}
}

// removeNamespace kills what still runs in ns (processes the harness
// started there) and deletes it.
func removeNamespace(ctx context.Context, ns string) {
	if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
		return
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	lab.Run(ctx, "ip", "netns", "delete", ns)
}

// removeStale removes the namespaces of boxes whose harness died.
func removeStale() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), nsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		removeNamespace(context.Background(), e.Name())
	}
}

// listening reports whether something in namespace-holding process pid's
// network listens on tcp port.
func listening(ns string, port int) bool {
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/tcp").Output()
	if err != nil {
		return false
	}
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
			return true
		}
	}
	return false
}
