package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pptp-alg/pptp-alg/scripts/fw4"
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

// useSetup turns the lab's router into s, from whatever it was.
func (b *bench) useSetup(ctx context.Context, s setup) error {
	l := b.lab
	if err := b.stopDaemon(); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	// Errors are ignored where the thing may not be there.
	l.Run(ctx, l.Router, "nft", "delete", "table", "inet", "fw4")
	// The server routes back to the LAN only without NAT.
	route := []string{"route", "replace", l.LANPrefix.String(), "via", l.WANAddr.String()}
	if s != setupRouting {
		route[1] = "del"
	}
	if _, err := l.Run(ctx, l.Server, "ip", route...); err != nil && s == setupRouting {
		return err
	}
	if s != setupRouting {
		c := fw4.Config{LAN: lab.RouterLAN, WAN: lab.RouterWAN, PPTPHelper: s == setupHelper}
		if s == setupALG {
			c.Includes = filepath.Join(b.root, includesDir)
		}
		ruleset, err := fw4.Render(c)
		if err != nil {
			return err
		}
		path := filepath.Join(l.Dir, "bench-fw4.nft")
		if err := os.WriteFile(path, []byte(ruleset), 0o644); err != nil {
			return err
		}
		if _, err := l.Run(ctx, l.Router, "nft", "-f", path); err != nil {
			return err
		}
	}
	// No connection of the previous setup may carry its helper or NAT.
	l.Run(ctx, l.Router, "conntrack", "-F")
	if s == setupALG {
		return b.startDaemon(ctx)
	}
	return nil
}

func (b *bench) startDaemon(ctx context.Context) error {
	l := b.lab
	b.socket = filepath.Join(l.Dir, "pptp-alg.sock")
	// Caps high enough for the largest scale step, the latency and GRE
	// connections on top.
	maxCalls := 2*b.maxScale() + 100
	b.daemonLog = filepath.Join(l.Dir, "pptp-alg.log")
	// The log goes to a file, as a router's log daemon would take it: a
	// pipe to this busy process could fill and stall the daemon's writes.
	p, err := l.Start("pptp-alg", l.Router, nil, "sh", "-c", `exec "$0" "$@" 2>>'`+b.daemonLog+`'`, b.algBin, "run",
		"--lan", lab.RouterLAN, "--wan", lab.RouterWAN, "--socket", b.socket,
		"--max-calls", strconv.Itoa(maxCalls),
		"--max-calls-per-client", strconv.Itoa(maxCalls),
		"--max-conns-per-client", strconv.Itoa(maxCalls))
	if err != nil {
		return err
	}
	b.daemon = p
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.WaitFor(wctx, "control socket", func() bool {
		_, err := os.Stat(b.socket)
		return err == nil
	}); err != nil {
		return err
	}
	if b.daemonPID, err = findPID(ctx, l.Router, "pptp-alg"); err != nil {
		return err
	}
	if b.opt.routerNft != "" {
		path, err := filepath.Abs(b.opt.routerNft)
		if err != nil {
			return err
		}
		if _, err := l.Run(ctx, l.Router, "nft", "-f", path); err != nil {
			return fmt.Errorf("-router-nft: %w", err)
		}
	}
	return nil
}

func (b *bench) stopDaemon() error {
	if b.daemon == nil {
		return nil
	}
	err := b.daemon.Stop()
	b.daemon = nil
	return err
}

// mappings returns how many calls the daemon lists.
func (b *bench) mappings(ctx context.Context) (int, error) {
	out, err := b.lab.Command(ctx, b.lab.Router, b.algBin, "mappings", "--json", "--socket", b.socket).Output()
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
func (b *bench) kernelCalls(ctx context.Context) (in, out int, err error) {
	count := func(kind, name string) (int, error) {
		o, err := b.lab.Command(ctx, b.lab.Router, "nft", "-j", "list", kind, "ip", "pptp_alg", name).Output()
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

// maxScale is the most calls any scale step holds at once.
func (b *bench) maxScale() int {
	n := 1
	for _, s := range b.opt.scale {
		n = max(n, s.calls)
	}
	return n
}
