// Package lab builds a small real network in Linux network namespaces for
// end-to-end tests and demos of pptp-alg: LAN hosts behind a router that does
// NAT, and a server on the router's WAN side, with real PPTP peers (pptpd on
// the server, pptp-linux on the hosts, RFC 2637) carrying PPP frames in async
// HDLC framing (RFC 1662).
//
//	host h1 .11 ─┐
//	host h2 .12 ─┼─ br-lan 192.168.77.1  router  wan 203.0.113.1 ── eth0 203.0.113.2  server
//	host hN ...  ─┘        (LAN, /24)            (WAN, /24)
//
// The server has no route to the LAN, so it only ever sees the router's WAN
// address. Everything runs as root; Supported says why a machine cannot.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pptp-alg/pptp-alg/scripts/fw4"
)

// Firewall selects the router's ruleset.
type Firewall int

const (
	// FirewallNone routes without NAT or filtering.
	FirewallNone Firewall = iota
	// FirewallFW4Helper is a stock OpenWrt fw4 ruleset (see scripts/fw4)
	// with the kernel's PPTP helper assigned to LAN tcp/1723, as fw4 does
	// when kmod-nf-nathelper-extra is installed.
	FirewallFW4Helper
	// FirewallFW4 is the fw4 ruleset without the helper, with the
	// project's fw4 include files spliced in as fw4 does on a router
	// running pptp-alg.
	FirewallFW4
	// FirewallFW4AndHelper is FirewallFW4 plus the kernel helper: pptp-alg
	// installed on a router that also has kmod-nf-nathelper-extra.
	FirewallFW4AndHelper
)

func (f Firewall) String() string {
	switch f {
	case FirewallNone:
		return "none"
	case FirewallFW4Helper:
		return "fw4-helper"
	case FirewallFW4:
		return "fw4"
	case FirewallFW4AndHelper:
		return "fw4-and-helper"
	}
	return "Firewall(" + strconv.Itoa(int(f)) + ")"
}

// Options configure a Lab. The zero value is a lab of three hosts with plain
// routing.
type Options struct {
	// Hosts is the number of LAN hosts; 0 means 3.
	Hosts int
	// Firewall is the router's ruleset.
	Firewall Firewall
	// Prefix starts the name of every namespace and temp dir of the lab;
	// "" means "pal". Names go on with the process ID and a random tag, so
	// labs never clash, and New removes what labs of the same prefix left
	// behind when their process died.
	Prefix string
	// Tools are the helper binaries; nil builds them into the lab's temp
	// dir (see BuildTools).
	Tools *Tools
	// Includes is the fw4 include tree (the layout of
	// /usr/share/nftables.d) for FirewallFW4 and FirewallFW4AndHelper;
	// "" means the project's own, under firmware/openwrt/pptp-alg.
	Includes string
	// WANInput and Redirects are the admin's fw4 rules for traffic from the
	// WAN (see scripts/fw4): input rules to the router itself, and port
	// forwards to LAN hosts. Only with an fw4 Firewall.
	WANInput  []fw4.Rule
	Redirects []fw4.Redirect
	// Logger receives what pptpd, pptp-linux and pppecho write to syslog,
	// and the lab's own steps at debug level. nil discards.
	Logger *slog.Logger
}

// Host is a LAN host.
type Host struct {
	Name string     // short name: h1, h2, ...
	NS   string     // network namespace
	Addr netip.Addr // its LAN address
}

// Lab is a running lab. Its exported fields are read-only.
type Lab struct {
	Name   string // unique name, the start of every namespace name
	Router string // router namespace: "wan" and "br-lan"
	Server string // server namespace: "eth0"
	Hosts  []Host

	WANAddr    netip.Addr   // router on the WAN
	LANAddr    netip.Addr   // router on the LAN
	ServerAddr netip.Addr   // server
	WANPrefix  netip.Prefix // 203.0.113.0/24
	LANPrefix  netip.Prefix // 192.168.77.0/24

	// Dir is the lab's temp dir: configs, sockets, maybe binaries.
	Dir string

	tools Tools
	log   *slog.Logger

	mu      sync.Mutex
	procs   []*proc // started processes, stopped by Close
	started int     // procs ever started, to name them
	pptpd   *proc
}

// Device names inside the namespaces.
const (
	RouterWAN = "wan"    // router's WAN veth, peer of the server's eth0
	RouterLAN = "br-lan" // router's LAN bridge
	HostDev   = "eth0"   // the one interface of a host or the server
)

var (
	wanPrefix = netip.MustParsePrefix("203.0.113.0/24") // TEST-NET-3
	lanPrefix = netip.MustParsePrefix("192.168.77.0/24")
)

const firstHost = 11 // h1 is .11

// HostAddr is the LAN address every lab gives host hN (N from 1), known
// before the lab is built: for port forwards to it in Options.
func HostAddr(n int) netip.Addr {
	a := lanPrefix.Addr().As4()
	a[3] = byte(firstHost + n - 1)
	return netip.AddrFrom4(a)
}

// ErrNotSupported is wrapped by the errors of Supported and New when the
// machine cannot run a lab.
var ErrNotSupported = errors.New("lab not supported here")

// Supported reports whether this process can build a lab and start the PPTP
// peers: it needs root and the tools ip, nft, pptpd and pptp. (BuildTools
// also needs go.)
func Supported() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (network namespaces, nftables)", ErrNotSupported)
	}
	for _, tool := range []string{"ip", "nft", "pptpd", "pptp"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not found in PATH", ErrNotSupported, tool)
		}
	}
	return nil
}

// New builds a lab. Close it to remove it.
func New(ctx context.Context, opt Options) (_ *Lab, err error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	if opt.Hosts == 0 {
		opt.Hosts = 3
	}
	if opt.Hosts < 0 || opt.Hosts > 100 {
		return nil, fmt.Errorf("lab: %d hosts, want 1 to 100", opt.Hosts)
	}
	if opt.Prefix == "" {
		opt.Prefix = "pal"
	}
	if strings.ContainsAny(opt.Prefix, "/-0123456789") {
		return nil, fmt.Errorf("lab: prefix %q may not hold digits, dashes or slashes", opt.Prefix)
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	removeStale(ctx, opt.Prefix, log)

	var tag [2]byte
	rand.Read(tag[:])
	name := fmt.Sprintf("%s%d-%s", opt.Prefix, os.Getpid(), hex.EncodeToString(tag[:]))
	l := &Lab{
		Name:       name,
		Router:     name + "-router",
		Server:     name + "-server",
		WANAddr:    wanPrefix.Addr().Next(),
		LANAddr:    lanPrefix.Addr().Next(),
		ServerAddr: wanPrefix.Addr().Next().Next(),
		WANPrefix:  wanPrefix,
		LANPrefix:  lanPrefix,
		log:        log,
	}
	for i := range opt.Hosts {
		h := fmt.Sprintf("h%d", i+1)
		l.Hosts = append(l.Hosts, Host{Name: h, NS: name + "-" + h, Addr: HostAddr(i + 1)})
	}

	l.Dir, err = os.MkdirTemp("", name+"-")
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	// Lab processes get a fresh /run and /dev (see labinit); a temp dir
	// there would vanish for them.
	for _, hidden := range []string{"/run/", "/var/run/", "/dev/"} {
		if strings.HasPrefix(l.Dir, hidden) {
			os.RemoveAll(l.Dir)
			return nil, fmt.Errorf("lab: temp dir %s is under %s; set TMPDIR elsewhere", l.Dir, hidden)
		}
	}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if err := l.buildNetwork(ctx); err != nil {
		return nil, err
	}
	netDone := time.Now()
	if opt.Tools != nil {
		l.tools = *opt.Tools
	} else {
		t, err := BuildTools(ctx, filepath.Join(l.Dir, "bin"))
		if err != nil {
			return nil, err
		}
		l.tools = *t
	}
	if err := l.installFirewall(ctx, opt); err != nil {
		return nil, err
	}
	log.Debug("lab up", "name", name, "hosts", opt.Hosts, "firewall", opt.Firewall,
		"network", netDone.Sub(start).Round(time.Millisecond), "total", time.Since(start).Round(time.Millisecond))
	return l, nil
}

// RouterHost is the router as a PPTP peer: StartPPTPClient runs a client
// on the router itself, which dials out of the WAN from its WAN address.
func (l *Lab) RouterHost() Host {
	return Host{Name: "router", NS: l.Router, Addr: l.WANAddr}
}

// Namespaces returns the names of all the lab's namespaces.
func (l *Lab) Namespaces() []string {
	ns := []string{l.Router, l.Server}
	for _, h := range l.Hosts {
		ns = append(ns, h.NS)
	}
	return ns
}

// buildNetwork creates the namespaces and links. The router creates every
// veth pair with the peer end already in the other namespace, so no
// interface ever shows up in the caller's namespace.
func (l *Lab) buildNetwork(ctx context.Context) error {
	for _, ns := range l.Namespaces() {
		if err := Run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
	}
	var r strings.Builder
	fmt.Fprintf(&r, "link set lo up\n")
	fmt.Fprintf(&r, "link add %s type bridge\n", RouterLAN)
	fmt.Fprintf(&r, "addr add %s/%d dev %s\n", l.LANAddr, lanPrefix.Bits(), RouterLAN)
	fmt.Fprintf(&r, "link set %s up\n", RouterLAN)
	fmt.Fprintf(&r, "link add %s type veth peer name %s netns %s\n", RouterWAN, HostDev, l.Server)
	fmt.Fprintf(&r, "addr add %s/%d dev %s\n", l.WANAddr, wanPrefix.Bits(), RouterWAN)
	fmt.Fprintf(&r, "link set %s up\n", RouterWAN)
	for i, h := range l.Hosts {
		port := fmt.Sprintf("lan%d", i+1)
		fmt.Fprintf(&r, "link add %s type veth peer name %s netns %s\n", port, HostDev, h.NS)
		fmt.Fprintf(&r, "link set %s master %s\n", port, RouterLAN)
		fmt.Fprintf(&r, "link set %s up\n", port)
	}
	if err := IPBatch(ctx, l.Router, r.String()); err != nil {
		return err
	}
	if err := l.Do(l.Router, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0)
	}); err != nil {
		return fmt.Errorf("lab: ip_forward: %w", err)
	}
	// OpenWrt leaves bridged frames out of the IP hooks (its sysctl.d sets
	// bridge-nf-call-iptables to 0); Debian's kernel, with br_netfilter
	// built in, passes them by default, which takes tproxy's socket from
	// the router's LAN packets. The setting is per network namespace.
	if err := l.Do(l.Router, func() error {
		err := os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("0\n"), 0)
		if errors.Is(err, os.ErrNotExist) { // no br_netfilter: nothing to turn off
			return nil
		}
		return err
	}); err != nil {
		return fmt.Errorf("lab: bridge-nf-call-iptables: %w", err)
	}

	// No default route on the server: it must never learn LAN addresses.
	s := fmt.Sprintf("link set lo up\naddr add %s/%d dev %s\nlink set %s up\n",
		l.ServerAddr, wanPrefix.Bits(), HostDev, HostDev)
	if err := IPBatch(ctx, l.Server, s); err != nil {
		return err
	}
	for _, h := range l.Hosts {
		s := fmt.Sprintf("link set lo up\naddr add %s/%d dev %s\nlink set %s up\nroute add default via %s\n",
			h.Addr, lanPrefix.Bits(), HostDev, HostDev, l.LANAddr)
		if err := IPBatch(ctx, h.NS, s); err != nil {
			return err
		}
	}
	return nil
}

// Close stops every process the lab started, removes its namespaces and its
// temp dir. It is safe to call more than once.
func (l *Lab) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	// Clients first, so they can hang up while pptpd still listens.
	var errs []error
	var wg sync.WaitGroup
	for _, p := range procs {
		if p != l.pptpd {
			wg.Go(func() { p.stop(stopGrace) })
		}
	}
	wg.Wait()
	if l.pptpd != nil {
		l.pptpd.stop(stopGrace)
	}
	for _, ns := range l.Namespaces() {
		if !nsExists(ns) {
			continue
		}
		// Whatever else runs there was started by the caller through
		// the lab (Command); a namespace with processes in it would
		// outlive its name.
		killNamespace(ctx, ns)
		if err := Run(ctx, "ip", "netns", "delete", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if l.Dir != "" {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Command returns a command that runs name in namespace ns (ip netns exec).
func (l *Lab) Command(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Run runs name in namespace ns and returns its combined output; the error
// carries the output too.
func (l *Lab) Run(ctx context.Context, ns, name string, args ...string) (string, error) {
	out, err := l.Command(ctx, ns, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", name, ns, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// removeStale removes namespaces and temp dirs named for prefix whose process
// is gone, and kills what still runs in those namespaces: leftovers of a lab
// whose test binary was killed before Close.
func removeStale(ctx context.Context, prefix string, log *slog.Logger) {
	stale := func(name string) bool {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			return false
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		return ok && err == nil && pid != os.Getpid() && !processAlive(pid)
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if !stale(e.Name()) {
			continue
		}
		log.Info("removing stale lab namespace", "ns", e.Name())
		killNamespace(ctx, e.Name())
		if err := Run(ctx, "ip", "netns", "delete", e.Name()); err != nil {
			log.Warn("removing stale lab namespace", "ns", e.Name(), "err", err)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, d := range dirs {
		if stale(filepath.Base(d)) {
			log.Info("removing stale lab dir", "dir", d)
			os.RemoveAll(d)
		}
	}
}

func nsExists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}

// Run runs a command and returns an error holding its output if it fails.
func Run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// IPBatch runs ip commands, one a line, in namespace ns with one process.
func IPBatch(ctx context.Context, ns, script string) error {
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s -batch: %w: %s\nscript:\n%s", ns, err, strings.TrimSpace(string(out)), script)
	}
	return nil
}
