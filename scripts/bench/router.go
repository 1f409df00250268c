package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

// setup is one way the router carries PPTP.
type setup int

const (
	setupRouting setup = iota // no NAT, no filter; the server routes back to the LAN
	setupHelper               // fw4 with the kernel's nf_conntrack_pptp and nf_nat_pptp
	setupALG                  // fw4 with pptp-alg's include, and the daemon
	numSetups
)

func (s setup) String() string {
	return [...]string{"plain routing", "fw4 + kernel helper", "fw4 + pptp-alg"}[s]
}

// includesDir is the project's fw4 include tree, as the OpenWrt package
// installs it.
const includesDir = "firmware/openwrt/pptp-alg/files/usr/share/nftables.d"

// rig is one lab whose router keeps one setup for the whole run, with the
// bench's load generators in its hosts and server. Several rigs exist at
// once, so that setups can take turns every fraction of a second.
type rig struct {
	setup setup
	lab   *lab.Lab
	log   *slog.Logger

	srv     *pac
	h1GRE   *rawSocket // receives inbound GRE in h1, sends outbound
	srvGRE  *rawSocket // the server's
	h1UDP   *rawSocket // sends UDP, the traffic that is not PPTP
	srvUDP  *rawSocket // counts it
	discard net.PacketConn

	// The call GRE is measured on, while held.
	callConn *pns
	call     calls

	// pptp-alg's daemon, in setupALG rigs. Its socket and log are in the
	// lab's own dir: daemons of two labs share the file system.
	daemon    *lab.Process
	daemonPID int
	socket    string
	daemonLog string
}

// daemonOptions is how the bench starts pptp-alg.
type daemonOptions struct {
	bin        string
	maxCalls   int
	routerNft  string // nft -f this after start, if set
	lanControl string // --lan-control, if set
}

// newRig builds a lab with prefix whose router runs s.
func newRig(ctx context.Context, s setup, prefix string, hosts int, tools *lab.Tools, root string, dc daemonOptions, log *slog.Logger) (_ *rig, err error) {
	opt := lab.Options{Hosts: hosts, Prefix: prefix, Tools: tools, Logger: log}
	switch s {
	case setupHelper:
		opt.Firewall = lab.FirewallFW4Helper
	case setupALG:
		opt.Firewall = lab.FirewallFW4
		opt.Includes = filepath.Join(root, includesDir)
	}
	l, err := lab.New(ctx, opt)
	if err != nil {
		return nil, err
	}
	r := &rig{setup: s, lab: l, log: log.With("setup", s.String())}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	// The kernel here has br_netfilter built in, which sends bridged IPv4
	// through the IP hooks at the bridge too; OpenWrt does not load it.
	if err := l.Do(l.Router, func() error {
		for _, k := range []string{"iptables", "ip6tables", "arptables"} {
			f := "/proc/sys/net/bridge/bridge-nf-call-" + k
			if _, err := os.Stat(f); err == nil {
				if err := os.WriteFile(f, []byte("0\n"), 0); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("br_netfilter off: %w", err)
	}
	// The server routes back to the LAN only without NAT.
	if s == setupRouting {
		if _, err := l.Run(ctx, l.Server, "ip", "route", "replace", l.LANPrefix.String(), "via", l.WANAddr.String()); err != nil {
			return nil, err
		}
	}
	if err := r.startLoad(); err != nil {
		return nil, err
	}
	if s == setupALG {
		if err := r.startDaemon(ctx, dc); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Close stops the daemon and the load and removes the lab.
func (r *rig) Close() error {
	if r.callConn != nil {
		r.callConn.Close()
	}
	err := r.stopDaemon()
	if err != nil {
		err = fmt.Errorf("daemon: %w", err)
	}
	r.closeLoad()
	return errors.Join(err, r.lab.Close())
}

// daemonTail is the end of the daemon's log and output, for errors.
func (r *rig) daemonTail() string {
	if r.daemonLog == "" {
		return ""
	}
	log, _ := os.ReadFile(r.daemonLog)
	out := strings.Split(strings.TrimSpace(string(log)), "\n")
	alive := r.daemon != nil && !r.daemon.Exited()
	s := fmt.Sprintf("daemon in %s (running: %v) log, last lines:\n%s\n", r.lab.Name, alive, strings.Join(out[max(0, len(out)-20):], "\n"))
	if r.daemon != nil {
		s += fmt.Sprintf("daemon output: %s\n", r.daemon.Output())
	}
	return s
}

// startLoad starts the PAC in the server and the raw sockets in h1 and the
// server, their receivers on the receivers' CPU.
func (r *rig) startLoad() error {
	l := r.lab
	var ln net.Listener
	err := l.Do(l.Server, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(l.ServerAddr, 1723).String())
		if err != nil {
			return err
		}
		// A UDP socket on the port the UDP flow goes to, never read, so
		// the server drops the flow quietly instead of answering each
		// packet with an ICMP error.
		if r.discard, err = net.ListenPacket("udp4", fmt.Sprintf("%v:%d", l.ServerAddr, udpPort)); err != nil {
			return err
		}
		if r.srvGRE, err = openRaw(protoGRE, l.ServerAddr); err != nil {
			return err
		}
		r.srvUDP, err = openRaw(protoUDP, l.ServerAddr)
		return err
	})
	if err != nil {
		return err
	}
	r.srv = newPAC(ln)
	if err := l.Do(l.Hosts[0].NS, func() (err error) {
		if r.h1GRE, err = openRaw(protoGRE, l.Hosts[0].Addr); err != nil {
			return err
		}
		r.h1UDP, err = openRaw(protoUDP, l.Hosts[0].Addr)
		return err
	}); err != nil {
		return err
	}
	for _, g := range []*rawSocket{r.srvGRE, r.h1GRE, r.srvUDP, r.h1UDP} {
		go g.receive(receiverCPU)
	}
	return nil
}

func (r *rig) closeLoad() {
	if r.srv != nil {
		r.srv.Close()
	}
	if r.discard != nil {
		r.discard.Close()
	}
	for _, g := range []*rawSocket{r.srvGRE, r.h1GRE, r.srvUDP, r.h1UDP} {
		if g != nil {
			g.Close()
		}
	}
}

// dialTimeout lets a connection through fw4's SYN-flood limit (25 new
// connections a second to the router, which the relay is) after the
// kernel's SYN retries, when many are opened at once.
const dialTimeout = time.Minute

// dial opens a control connection from host h to the server.
func (r *rig) dial(h lab.Host) (*pns, error) {
	var c net.Conn
	err := r.lab.Do(h.NS, func() (err error) {
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(r.lab.ServerAddr, 1723).String(), dialTimeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	p, err := startPNS(c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: %w", h.Name, err)
	}
	return p, nil
}

func (r *rig) startDaemon(ctx context.Context, dc daemonOptions) error {
	l := r.lab
	r.socket = filepath.Join(l.Dir, "pptp-alg.sock")
	r.daemonLog = filepath.Join(l.Dir, "pptp-alg.log")
	caps := strconv.Itoa(dc.maxCalls)
	// The log goes to a file, as a router's log daemon would take it: a
	// pipe to this busy process could fill and stall the daemon's writes.
	// The bench's PNS sends no echoes and its GRE call lies idle between
	// sections: without the long timeouts the daemon would release it.
	// (They leave the 10 s idle check as it is.)
	wrap := `exec "$0" "$@" 2>>'` + r.daemonLog + `'`
	args := []string{"sh", "-c", wrap, dc.bin, "run",
		"--lan", lab.RouterLAN, "--wan", lab.RouterWAN, "--socket", r.socket,
		"--max-calls", caps, "--max-calls-per-client", caps, "--max-conns-per-client", caps,
		"--idle-timeout", "1h", "--control-idle-timeout", "1h"}
	if dc.lanControl != "" {
		args = append(args, "--lan-control", dc.lanControl)
	}
	p, err := l.Start("pptp-alg", l.Router, nil, args...)
	if err != nil {
		return err
	}
	r.daemon = p
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.WaitFor(wctx, "control socket", func() bool {
		_, err := os.Stat(r.socket)
		return err == nil
	}); err != nil {
		return err
	}
	if r.daemonPID, err = findPID(ctx, l.Router, "pptp-alg"); err != nil {
		return err
	}
	if dc.routerNft != "" {
		path, err := filepath.Abs(dc.routerNft)
		if err != nil {
			return err
		}
		if _, err := l.Run(ctx, l.Router, "nft", "-f", path); err != nil {
			return fmt.Errorf("-router-nft: %w", err)
		}
	}
	return nil
}

func (r *rig) stopDaemon() error {
	if r.daemon == nil {
		return nil
	}
	err := r.daemon.Stop()
	r.daemon = nil
	return err
}

// mappings returns how many calls the daemon lists.
func (r *rig) mappings(ctx context.Context, bin string) (int, error) {
	out, err := r.lab.Command(ctx, r.lab.Router, bin, "mappings", "--json", "--socket", r.socket).Output()
	if err != nil {
		return 0, fmt.Errorf("mappings: %w", err)
	}
	var ms []json.RawMessage
	if err := json.Unmarshal(out, &ms); err != nil {
		return 0, fmt.Errorf("mappings: %w", err)
	}
	return len(ms), nil
}

// kernelCalls counts the elements of the daemon's GRE map and set.
func (r *rig) kernelCalls(ctx context.Context) (in, out int, err error) {
	count := func(kind, name string) (int, error) {
		o, err := r.lab.Command(ctx, r.lab.Router, "nft", "-j", "list", kind, "ip", "pptp_alg", name).Output()
		if err != nil {
			return 0, fmt.Errorf("nft list %s %s: %w", kind, name, err)
		}
		var doc struct {
			Nftables []map[string]struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal(o, &doc); err != nil {
			return 0, fmt.Errorf("nft list %s %s: %w", kind, name, err)
		}
		n := 0
		for _, obj := range doc.Nftables {
			n += len(obj[kind].Elem)
		}
		return n, nil
	}
	if in, err = count("map", "gre_in"); err != nil {
		return 0, 0, err
	}
	out, err = count("set", "gre_out")
	return in, out, err
}

// findPID returns the host PID of the process named comm in namespace ns.
func findPID(ctx context.Context, ns, comm string) (int, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return 0, fmt.Errorf("ip netns pids %s: %w", ns, err)
	}
	for _, f := range strings.Fields(string(out)) {
		pid, _ := strconv.Atoi(f)
		c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(c)) == comm {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process in %s", comm, ns)
}

// procStat is what /proc says about a process.
type procStat struct {
	RSS, HWM uint64        // resident and peak resident bytes
	CPU      time.Duration // user plus system time
}

// userHZ is the unit of /proc/PID/stat times; Linux fixes it at 100.
const userHZ = 100

func readProc(pid int) (procStat, error) {
	var s procStat
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseUint(f[0], 10, 64)
		switch k {
		case "VmRSS":
			s.RSS = n << 10
		case "VmHWM":
			s.HWM = n << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// pid (comm) state ppid ... utime is field 14, stime 15; comm may hold
	// spaces, so count from the last parenthesis.
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	s.CPU = time.Duration(ut+st) * time.Second / userHZ
	return s, nil
}
