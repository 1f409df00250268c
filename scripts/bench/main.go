// Command bench measures pptp-alg against its anchors on one lab (see
// scripts/lab): plain routing with no NAT, stock fw4 with the kernel's PPTP
// helpers (nf_conntrack_pptp, nf_nat_pptp), and fw4 with pptp-alg. It
// measures GRE forwarding (RFC 2637 section 4) in packets per second, call
// set-up latency (Outgoing-Call-Request to Outgoing-Call-Reply, section
// 2.7-2.8), and pptp-alg with thousands of calls: set-up and tear-down
// rates, GRE rate, and the daemon's memory and CPU. It prints tables with
// ratios and the goals of issue 4, met or missed.
//
// Usage, as root: go run ./scripts/bench [-smoke] [flags]
//
// Everything runs in namespaces the bench creates and removes. The load
// generators (GRE blaster and receivers, a PAC and a PNS) run in this
// process, on sockets opened inside the lab's namespaces.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	duration     time.Duration
	reps         int
	scaleReps    int
	sizes        []int
	latencyCalls int
	scale        []scaleStep
	hosts        int
	window       int
	profile      string
	routerNft    string
	goBench      bool
	boost        bool // raise the scheduling priority (not for -smoke)
	verbose      bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{boost: true}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	smoke := fs.Bool("smoke", false, "tiny counts and short windows, no Go benchmarks: checks the command works (seconds, not minutes)")
	fs.DurationVar(&o.duration, "duration", 2*time.Second, "sending time of each GRE measurement")
	fs.IntVar(&o.reps, "reps", 5, "rounds of the three setups (GRE, call set-up latency); medians are reported")
	fs.IntVar(&o.scaleReps, "scale-reps", 3, "rounds of the scale steps")
	sizes := fs.String("sizes", "64,1400", "GRE payload `bytes`, comma-separated")
	fs.IntVar(&o.latencyCalls, "latency-calls", 2000, "sequential calls timed per setup")
	scale := fs.String("scale", "1/1,1000/250,10000/250,1000/1", "scale steps, `CALLS/PER_CONN`, comma-separated")
	fs.IntVar(&o.hosts, "hosts", 10, "LAN hosts the scale steps spread their connections over")
	fs.IntVar(&o.window, "window", 32, "call requests per write when calls are set up in bulk")
	fs.StringVar(&o.profile, "profile", "", "record perf profiles into `dir`: the kernel under GRE load, the daemon under call load (perf slows what it watches: take the figures from a run without)")
	fs.StringVar(&o.routerNft, "router-nft", "", "nft -f `file` run in the router each time the daemon has started, to try variants of its ruleset")
	fs.BoolVar(&o.goBench, "gobench", true, "also run the Go benchmarks of alg and nat")
	fs.BoolVar(&o.verbose, "v", false, "log progress to stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *smoke {
		o.duration, o.reps, o.scaleReps, *sizes, o.latencyCalls, *scale, o.hosts = 300*time.Millisecond, 1, 1, "64", 30, "1/1,100/50,20/1", 2
		o.goBench, o.boost = false, false
	}
	for f := range strings.SplitSeq(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 1400 {
			return o, fmt.Errorf("-sizes: %q: want 0 to 1400", f)
		}
		o.sizes = append(o.sizes, n)
	}
	for f := range strings.SplitSeq(*scale, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		a, b, _ := strings.Cut(strings.TrimSpace(f), "/")
		n, err1 := strconv.Atoi(a)
		k, err2 := strconv.Atoi(b)
		// The bench's PAC hands out server call IDs from half the space.
		if err1 != nil || err2 != nil || n < 1 || k < 1 || n > serverIDs/2 {
			return o, fmt.Errorf("-scale: %q: want CALLS/PER_CONN, at most %d calls", f, serverIDs/2)
		}
		o.scale = append(o.scale, scaleStep{n, min(k, n)})
	}
	if o.reps < 1 || o.scaleReps < 1 || o.duration <= 0 || o.latencyCalls < 1 || o.hosts < 1 || o.hosts > 100 || o.window < 1 {
		return o, errors.New("-reps, -scale-reps, -duration, -latency-calls, -window must be positive; -hosts 1 to 100")
	}
	return o, nil
}

// bench is one run.
type bench struct {
	opt    options
	log    *slog.Logger
	root   string
	algBin string

	lab       *lab.Lab
	srv       *pac
	h1GRE     *rawSocket // receives inbound GRE in h1, sends outbound
	srvGRE    *rawSocket // the server's
	h1UDP     *rawSocket // sends UDP, the traffic that is not PPTP
	srvUDP    *rawSocket // counts it
	discard   net.PacketConn
	socket    string
	daemon    *lab.Process
	daemonPID int
	daemonLog string

	res results
}

// CPUs: the sender gets one, the receivers the other (on a 2-core machine
// the daemon and the kernel share both).
const (
	senderCPU   = 0
	receiverCPU = 1
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	opt, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := lab.Supported(); err != nil {
		return err
	}
	level := slog.LevelWarn
	if opt.verbose {
		level = slog.LevelInfo
	}
	b := &bench{opt: opt, log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	b.res.started = time.Now()
	b.res.opt = opt
	b.res.command = "go run ./scripts/bench " + strings.Join(args, " ")
	if b.root, err = lab.ModuleRoot(); err != nil {
		return err
	}
	if opt.boost {
		boostPriority(b.log)
	}
	// Thousands of connections relayed: the daemon holds two sockets for
	// each, and this process two more.
	raiseFileLimit()

	dir, err := os.MkdirTemp("", "pptp-alg-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tools, err := lab.BuildTools(ctx, dir)
	if err != nil {
		return err
	}
	// Not stripped, so perf can name the daemon's functions.
	b.algBin = filepath.Join(dir, "pptp-alg")
	build := exec.CommandContext(ctx, "go", "build", "-o", b.algBin, "./cmd/pptp-alg")
	build.Dir = b.root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w: %s", err, out)
	}

	hosts := max(opt.hosts, 2)
	b.lab, err = lab.New(ctx, lab.Options{Hosts: hosts, Firewall: lab.FirewallNone, Prefix: "pab", Tools: tools, Logger: b.log})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && b.daemonLog != "" {
			log, _ := os.ReadFile(b.daemonLog)
			out := strings.Split(strings.TrimSpace(string(log)), "\n")
			alive := b.daemon != nil && !b.daemon.Exited()
			fmt.Fprintf(stderr, "daemon (running: %v) log, last lines:\n%s\n", alive, strings.Join(out[max(0, len(out)-20):], "\n"))
			if b.daemon != nil {
				fmt.Fprintf(stderr, "daemon output: %s\n", b.daemon.Output())
			}
		}
		if serr := b.stopDaemon(); serr != nil && err == nil {
			err = fmt.Errorf("daemon: %w", serr)
		}
		b.closeLoad()
		if cerr := b.lab.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	// The kernel here has br_netfilter built in, which sends bridged IPv4
	// through the IP hooks at the bridge too; OpenWrt does not load it.
	if err := b.lab.Do(b.lab.Router, func() error {
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
		return fmt.Errorf("br_netfilter off: %w", err)
	}
	if err := b.startLoad(); err != nil {
		return err
	}

	// The setups take turns, so that drift in the machine's load spreads
	// over all of them.
	for round := range opt.reps {
		for s := range numSetups {
			b.log.Info("setup", "round", round, "setup", s)
			if err := b.useSetup(ctx, s); err != nil {
				return fmt.Errorf("%v: %w", s, err)
			}
			if err := b.greRates(ctx, s); err != nil {
				return fmt.Errorf("%v: GRE: %w", s, err)
			}
			if err := b.latency(ctx, s, (opt.latencyCalls+opt.reps-1)/opt.reps); err != nil {
				return fmt.Errorf("%v: latency: %w", s, err)
			}
		}
	}
	// Scale steps take turns too, so that each step's GRE rate has a
	// 1-call neighbour in time. Steps of one call a connection run once,
	// last: fw4 admits 25 new connections a second to the router itself,
	// the relay included, so they take long, and the daemon keeps their
	// memory a while, which would show in the steps after them.
	b.res.scale = make([]scaleResult, len(opt.scale))
	for round := range opt.scaleReps + 1 {
		for i, step := range opt.scale {
			manyConns := step.perConn == 1 && step.calls > 1
			if manyConns != (round == opt.scaleReps) {
				continue
			}
			b.log.Info("scale", "round", round, "step", step)
			b.res.scale[i].step = step
			if err := b.scaleStep(ctx, &b.res.scale[i], round == 0 || manyConns); err != nil {
				return fmt.Errorf("scale %v: %w", step, err)
			}
		}
	}
	if err := b.stopDaemon(); err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	if opt.goBench {
		b.log.Info("go benchmarks")
		b.res.gobench, b.res.gobenchErr = b.goBench(ctx)
	}
	b.res.finished = time.Now()
	b.res.print(stdout)
	return nil
}

// boostPriority puts the bench, and the lab processes it starts, in a
// scheduling group of its own at nice -20: on a shared machine, other
// sessions' load otherwise takes most of the CPU time at random and the
// rates mean nothing. (With autogroup, nice only orders tasks within a
// session; the group's own nice orders sessions.)
func boostPriority(log *slog.Logger) {
	unix.Setsid()
	if err := os.WriteFile("/proc/self/autogroup", []byte("-20"), 0); err != nil {
		log.Warn("cannot raise the scheduling priority; other load will show in the figures", "err", err)
	}
}

// raiseFileLimit raises the open-file limit for this process and the lab
// processes it starts. It goes through package syscall, which is what makes
// os/exec pass the new limit on rather than the one the process started
// with.
func raiseFileLimit() {
	lim := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		var cur syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur) == nil {
			cur.Cur = cur.Max
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur)
		}
	}
}

// startLoad starts the PAC in the server and the raw sockets in h1 and the
// server.
func (b *bench) startLoad() error {
	l := b.lab
	var ln net.Listener
	err := l.Do(l.Server, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(l.ServerAddr, 1723).String())
		if err != nil {
			return err
		}
		// A UDP socket on the port the UDP flow goes to, never read, so
		// the server drops the flow quietly instead of answering each
		// packet with an ICMP error.
		if b.discard, err = net.ListenPacket("udp4", fmt.Sprintf("%v:%d", l.ServerAddr, udpPort)); err != nil {
			return err
		}
		if b.srvGRE, err = openRaw(protoGRE, l.ServerAddr); err != nil {
			return err
		}
		b.srvUDP, err = openRaw(protoUDP, l.ServerAddr)
		return err
	})
	if err != nil {
		return err
	}
	b.srv = newPAC(ln)
	if err := l.Do(l.Hosts[0].NS, func() (err error) {
		if b.h1GRE, err = openRaw(protoGRE, l.Hosts[0].Addr); err != nil {
			return err
		}
		b.h1UDP, err = openRaw(protoUDP, l.Hosts[0].Addr)
		return err
	}); err != nil {
		return err
	}
	for _, g := range []*rawSocket{b.srvGRE, b.h1GRE, b.srvUDP, b.h1UDP} {
		go g.receive(receiverCPU)
	}
	return nil
}

func (b *bench) closeLoad() {
	if b.srv != nil {
		b.srv.Close()
	}
	if b.discard != nil {
		b.discard.Close()
	}
	for _, g := range []*rawSocket{b.srvGRE, b.h1GRE, b.srvUDP, b.h1UDP} {
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
func (b *bench) dial(h lab.Host) (*pns, error) {
	var c net.Conn
	err := b.lab.Do(h.NS, func() (err error) {
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(b.lab.ServerAddr, 1723).String(), dialTimeout)
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

// latency times n sequential calls on one control connection from h2, each
// cleared before the next.
func (b *bench) latency(ctx context.Context, s setup, n int) error {
	p, err := b.dial(b.lab.Hosts[1])
	if err != nil {
		return err
	}
	defer p.Close()
	const warm = 20
	for i := range warm + n {
		d, err := p.callLatency(uint16(i%1000 + 1))
		if err != nil {
			return fmt.Errorf("call %d: %w", i, err)
		}
		if i >= warm {
			b.res.latency[s] = append(b.res.latency[s], d)
		}
		if d > time.Millisecond {
			b.log.Info("slow call set-up", "setup", s, "call", i, "latency", d)
		}
	}
	return nil
}

// perfDaemon records the daemon's CPU profile until the returned function
// is called, if -profile is set.
func (b *bench) perfDaemon(name string) func() {
	return b.perf(name, "-p", strconv.Itoa(b.daemonPID))
}

// perfKernel records every CPU (the forwarding path runs in softirq).
func (b *bench) perfKernel(name string) func() {
	return b.perf(name, "-a")
}

func (b *bench) perf(name string, target ...string) func() {
	if b.opt.profile == "" {
		return func() {}
	}
	if err := os.MkdirAll(b.opt.profile, 0o755); err != nil {
		b.log.Warn("perf", "err", err)
		return func() {}
	}
	data := filepath.Join(b.opt.profile, name+".data")
	cmd := exec.Command("perf", append([]string{"record", "-q", "-g", "-o", data}, target...)...)
	if err := cmd.Start(); err != nil {
		b.log.Warn("perf", "err", err)
		return func() {}
	}
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		out, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children",
			"--percent-limit", "1", "--sort", "dso,sym", "-g", "none").Output()
		if err != nil {
			b.log.Warn("perf report", "err", err)
			return
		}
		os.WriteFile(filepath.Join(b.opt.profile, name+".txt"), out, 0o644)
	}
}
