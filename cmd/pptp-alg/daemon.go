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
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/pptp-alg/pptp-alg/alg"
	"github.com/pptp-alg/pptp-alg/conntrack"
	"github.com/pptp-alg/pptp-alg/nat"
)

var runHelp = help{
	synopsis: "pptp-alg run --lan IFACE[,IFACE...] --wan IFACE [OPTIONS]",
	about: `
Run the PPTP passthrough gateway in the foreground, logging to stderr, or
with --syslog to the system log (/dev/log, facility daemon) with each
line's severity: procd passes a service's stderr on to logd as errors,
whatever the line says. It is ready once its control socket exists.

PPTP control connections from the LAN interfaces to TCP port 1723 are
taken to a local relay, which connects to the server from the WAN address
and translates call IDs. --lan-control redirect (the default) takes them by
NAT, which costs nothing per packet; its tables carry the kernel's flag
owner (Linux 5.12+), so 'nft flush ruleset' leaves them. On older kernels
that flush resets busy ones, which --lan-control tproxy survives: the
relay's socket keeps the server's address. Its packets carry --tproxy-mark
(default 0x10000000/0x10000000, a bit fw4, mwan3 and pbr leave alone) and
a policy rule and route deliver them (--rule-priority, --route-table):
    ip rule add pref 1723 fwmark 0x10000000/0x10000000 lookup 1723
    ip route add local 0.0.0.0/0 dev lo table 1723
That rule slows every forwarded packet's route lookup, PPTP or not (up to
9%). While a LAN bridge passes the IP hooks (bridge-nf-call-iptables=1,
not OpenWrt's default), which lose tproxy's socket, the redirect serves.
GRE is translated in the kernel, by the nftables table the daemon owns
(family ip, "pptp_alg" unless --table).
The firewall must accept that GRE, which conntrack leaves untracked, in its
forward chain: 'pptp-alg doctor' checks it.

pptp-alg owns only the PPTP it relays. Connections to the router's own
addresses (a PPTP server on the router) are not relayed, and GRE that
belongs to no relayed call reaches conntrack, the firewall and the local
stack as without pptp-alg (that server, a port forward to a LAN server);
only GRE from a LAN host carrying another client's relayed call is dropped.

The router's own PPTP connections out of the WAN (pptp-linux on the router)
are relayed too (--router-calls), so its calls and the LAN's draw call IDs
from one table and never collide toward a server. The relay dials from the
address the router's client used; its own connections carry --relay-mark,
which the redirect passes by. The server's GRE for such a call is untracked
and delivered locally: the firewall's input chain must accept untracked GRE
(fw4: pptp-alg's input include). The cost: a daemon restart ends the
router's own relayed control connections, and its PPTP client reconnects;
while pptp-alg is disabled, new ones go direct.

The WAN interface must exist at start. A LAN interface need not: LAN
interfaces are matched by name, so one that is absent at start, or goes
away and comes back (a bridge whose network is restarted), is served
whenever it exists, and the calls of the others go on meanwhile.

Fast path: the GRE of known calls is forwarded from the ingress hook of the
WAN and LAN interfaces (a second table of the same name, family netdev,
using nft's fwd), skipping routing, the firewall's chains and conntrack;
it is faster than the kernel's own helper. Fragments, packets whose TTL
would expire or that exceed the outgoing MTU, and calls routed elsewhere
go through the ip table as before, as does all GRE with --fast-path=false
or while the fast path cannot be installed (the log and 'pptp-alg status'
say why). A kernel without nftables' netdev family or fwd (OpenWrt:
kmod-nft-netdev) makes run exit 2 unless --fast-path=false. The fast path
is rebuilt as soon as the kernel reports a change of an interface, MTU,
route or the WAN address.

The daemon acts on kernel notifications rather than polling: when its
tables lose anything ('nft flush ruleset' on older kernels, a firewall
reload) it installs them again at once, calls included; when the WAN address changes it
follows it and closes the control connections dialled from the old one.
While no call exists it does no periodic work at all.

'pptp-alg disable' removes the table and releases every call without
stopping the daemon; 'pptp-alg enable' installs it again. On SIGTERM or
SIGINT the daemon removes everything it installed and exits 0.

The kernel's own PPTP helper (nf_conntrack_pptp) must not translate the
connections pptp-alg relays: two NATs rewriting one stream corrupt it. The
daemon logs a warning naming the fix when a rule assigns that helper, and
refuses any relayed connection that carries it, logging why.

A LAN host may hold --max-conns-per-client control connections and
--max-calls-per-client calls; beyond them, or beyond --max-calls in all,
it is refused. A call is released when it is cleared, when its control
connection ends, or when its GRE has been idle for --idle-timeout.

Memory: the daemon runs its garbage collector at GOGC=50, half Go's usual
heap growth, so that 10,000 calls fit in about 20 MiB; set GOGC in the
environment to choose otherwise.`,
	exit: `
0  stopped by SIGTERM or SIGINT, with everything it installed removed
1  a runtime failure after start-up
2  a bad flag, a missing WAN interface or address, a missing kernel feature
   or permission, a port in use, or another pptp-alg on the same socket`,
	example: `
pptp-alg run --lan br-lan --wan wan
pptp-alg run --lan br-lan,br-guest --wan pppoe-wan --idle-timeout 10m`,
}

// defaultRelayMark is a bit that OpenWrt's fw4, mwan3 (0x3f00) and pbr
// (0xff0000) leave alone.
const defaultRelayMark = 0x20000000

type daemonConfig struct {
	lan         []string
	wan         string
	socket      string
	relayPort   uint
	idleTimeout time.Duration
	controlIdle time.Duration
	limits      alg.Limits
	table       string
	fastPath    bool
	routerCalls bool
	relayMark   markFlag
	tproxyMark  maskedMark
	routeTable  uint
	// rulePriority is the policy rule's: ip rule's pref.
	rulePriority uint
	// tproxy: --lan-control tproxy, LAN control connections by tproxy
	// unless a LAN bridge passes the IP hooks; otherwise by the redirect.
	tproxy  bool
	verbose bool
	syslog  bool
}

// maskedMark is a packet mark within a mask, written MARK or MARK/MASK
// (hex or decimal); the mask is the mark itself if not given.
type maskedMark struct{ mark, mask uint32 }

func (m *maskedMark) String() string { return fmt.Sprintf("%#x/%#x", m.mark, m.mask) }

func (m *maskedMark) Set(s string) error {
	bad := errors.New("want a nonzero 32-bit mark, optionally /MASK, such as 0x10000000 or 0x100/0xf00")
	ms, ks, masked := strings.Cut(s, "/")
	mark, err := strconv.ParseUint(ms, 0, 32)
	if err != nil || mark == 0 {
		return bad
	}
	mask := mark
	if masked {
		if mask, err = strconv.ParseUint(ks, 0, 32); err != nil {
			return bad
		}
	}
	if mark&^mask != 0 {
		return errors.New("the mark has bits outside its mask")
	}
	*m = maskedMark{uint32(mark), uint32(mask)}
	return nil
}

// markFlag is a packet mark, printed and parsed as hex (0x...) or decimal.
type markFlag uint32

func (m *markFlag) String() string { return fmt.Sprintf("%#x", uint32(*m)) }

func (m *markFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil || v == 0 {
		return errors.New("want a nonzero 32-bit mark, such as 0x20000000")
	}
	*m = markFlag(v)
	return nil
}

// parseRunFlags parses run's flags; done means --help was printed.
func parseRunFlags(args []string, stdout io.Writer) (cfg daemonConfig, done bool, err error) {
	cfg = daemonConfig{limits: alg.DefaultLimits, relayMark: defaultRelayMark,
		tproxyMark: maskedMark{nat.DefaultTProxyMark, nat.DefaultTProxyMark}}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	lan := fs.String("lan", "", "LAN `interfaces`, comma-separated (required)")
	fs.StringVar(&cfg.wan, "wan", "", "WAN `interface` (required); its first IPv4 address is the NAT address")
	fs.StringVar(&cfg.socket, "socket", defaultSocket, "control socket `path`")
	fs.UintVar(&cfg.relayPort, "relay-port", 1724, "local TCP `port` the relay listens on (tproxy and the router's own redirect take control connections there)")
	fs.DurationVar(&cfg.idleTimeout, "idle-timeout", 5*time.Minute, "release a call whose GRE has been idle this `long`")
	fs.DurationVar(&cfg.controlIdle, "control-idle-timeout", alg.DefaultControlIdleTimeout,
		"close a control connection whose client or server has sent nothing this `long` (live peers echo every 60s)")
	fs.IntVar(&cfg.limits.ConnsPerClient, "max-conns-per-client", cfg.limits.ConnsPerClient, "control connections per LAN host")
	fs.IntVar(&cfg.limits.CallsPerClient, "max-calls-per-client", cfg.limits.CallsPerClient, "calls per LAN host")
	fs.IntVar(&cfg.limits.Calls, "max-calls", cfg.limits.Calls, "calls in all")
	fs.StringVar(&cfg.table, "table", "pptp_alg", "`name` of the nftables tables (families ip and netdev) the daemon owns")
	fs.BoolVar(&cfg.fastPath, "fast-path", true, "forward known calls' GRE from the interfaces' ingress hooks (--fast-path=false: through the ip table only)")
	fs.BoolVar(&cfg.routerCalls, "router-calls", true,
		"relay the router's own PPTP connections out of the WAN too, so its calls and the LAN's never collide (--router-calls=false: they go direct)")
	fs.Var(&cfg.relayMark, "relay-mark", "packet mark `bit(s)` on the relay's own connections to servers, which the redirect of the router's own connections passes by")
	fs.Var(&cfg.tproxyMark, "tproxy-mark", "packet mark `bits[/mask]` on the LAN's control connections taken to the relay, which route them to it")
	fs.UintVar(&cfg.routeTable, "route-table", nat.DefaultRouteTable, "routing `table` that delivers marked control connections to the relay")
	fs.UintVar(&cfg.rulePriority, "rule-priority", nat.DefaultRulePriority, "`priority` (ip rule pref) of the policy rule that looks up --route-table")
	lanControl := fs.String("lan-control", lanControlRedirect, "`mode` of LAN control connections: redirect or tproxy")
	fs.BoolVar(&cfg.verbose, "verbose", false, "log debug detail")
	fs.BoolVar(&cfg.syslog, "syslog", false, "log to the system log (/dev/log) instead of stderr; a line it cannot take goes to stderr")
	if done, err := parseFlags(fs, runHelp, args, stdout); done || err != nil {
		return cfg, done, err
	}
	cfg.tproxy = *lanControl == lanControlTProxy
	for _, l := range strings.Split(*lan, ",") {
		if l = strings.TrimSpace(l); l != "" {
			cfg.lan = append(cfg.lan, l)
		}
	}
	switch {
	case len(cfg.lan) == 0:
		return cfg, true, usagef("run: --lan is required")
	case cfg.wan == "":
		return cfg, true, usagef("run: --wan is required")
	case cfg.relayPort == 0 || cfg.relayPort > 65535 || cfg.relayPort == 1723:
		return cfg, true, usagef("run: --relay-port must be 1-65535 and not 1723")
	case cfg.limits.ConnsPerClient < 1 || cfg.limits.CallsPerClient < 1 || cfg.limits.Calls < 1:
		return cfg, true, usagef("run: limits must be at least 1")
	case !cfg.tproxy && *lanControl != lanControlRedirect:
		return cfg, true, usagef("run: --lan-control must be redirect or tproxy")
	case cfg.routeTable == 0 || cfg.routeTable > 1<<32-1 || (cfg.routeTable >= 252 && cfg.routeTable <= 255):
		return cfg, true, usagef("run: --route-table must be 1-4294967295 and not one of the kernel's 252-255")
	case cfg.rulePriority == 0 || cfg.rulePriority >= 32766:
		return cfg, true, usagef("run: --rule-priority must be 1-32765, before the main table's rule")
	case uint32(cfg.relayMark)&cfg.tproxyMark.mask == cfg.tproxyMark.mark:
		return cfg, true, usagef("run: --relay-mark must not carry --tproxy-mark (the relay's connections would be routed to itself)")
	case cfg.idleTimeout < time.Second:
		return cfg, true, usagef("run: --idle-timeout must be at least 1s")
	case cfg.controlIdle < time.Second:
		return cfg, true, usagef("run: --control-idle-timeout must be at least 1s")
	}
	return cfg, false, nil
}

func runDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, done, err := parseRunFlags(args, stdout)
	if done || err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if cfg.syslog {
		w, err := dialSyslog("/dev/log")
		if err != nil {
			log.Warn("cannot reach the system log; logging to stderr until it can", "err", err)
		}
		defer w.Close()
		log = slog.New(newSyslogHandler(w, stderr, level))
	}
	// Routers are short of memory and the daemon allocates little once its
	// calls are up: collect at half the usual heap growth. With 10,000
	// calls this keeps RSS near 20 MiB instead of 25 (BENCHMARKS.md), for
	// about a fifth more CPU per call set up. GOGC still overrides it.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}

	if _, err := net.InterfaceByName(cfg.wan); err != nil {
		return usagef("WAN interface %s not found", cfg.wan)
	}
	// A LAN interface may be absent (a bridge whose network is down): the
	// redirect and the GRE rules match it by name when it comes.
	for _, name := range cfg.lan {
		if _, err := net.InterfaceByName(name); err != nil {
			log.Warn("LAN interface not found; serving it when it appears", "lan", name)
		}
	}
	// Before touching the kernel: a second daemon would replace the
	// first one's table.
	if socketAnswers(cfg.socket) {
		return usagef("control socket %s: another pptp-alg is running", cfg.socket)
	}
	// A kernel without a feature refuses a table that uses it; ask
	// first, so the reason is the feature's (a batch that fails at once
	// names nothing).
	findings := nat.Probe(0)
	if f, missing := nat.Missing(findings, cfg.fastPath); missing {
		if f.FastPath {
			return usagef("%s, which the GRE fast path needs: %s, or run with --fast-path=false", lacks(f), featureFix(f))
		}
		return usagef("%s: %s", lacks(f), featureFix(f))
	}
	tracker, err := conntrack.Open()
	if err != nil {
		return usagef("%v (needs ctnetlink)", err)
	}
	defer tracker.Close()
	// One lookup now, rather than every control connection refused later.
	// Helper wants IPv4 addresses; 0.0.0.0:0 is no connection, so the
	// kernel answers "not found" when ctnetlink works.
	none := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if _, err := tracker.Helper(none, none); err != nil {
		return usagef("%v (needs root and ctnetlink: nf_conntrack_netlink)", err)
	}

	var features []string
	owner := false
	for _, f := range findings {
		if f.Err == nil {
			features = append(features, f.Name)
			owner = owner || f.Name == nat.FeatureOwner
		}
	}
	d := &daemon{cfg: cfg, log: log, router: hostRouter{tracker: tracker, mark: int(cfg.relayMark)},
		features: append(features, "ctnetlink"), owner: owner, failed: make(chan error, 1)}
	if _, err := d.enable(); err != nil {
		return usageError{err}
	}
	defer d.shutdown()

	ctl, err := listenControl(cfg.socket)
	if err != nil {
		return usageError{err}
	}
	log.Info("pptp-alg ready", "version", version, "lan", strings.Join(cfg.lan, ","),
		"wan", cfg.wan, "wan_addr", *d.wanAddr.Load(), "relay_port", cfg.relayPort, "socket", cfg.socket)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- d.serveControl(ctx, ctl) }()
	select {
	case <-ctx.Done():
	case err = <-d.failed:
	case err := <-ctlDone:
		return err
	}
	cancel()
	<-ctlDone
	return err
}

// gateway is what runs while pptp-alg is enabled: the relay and the upkeep
// of the kernel state (maintain), over the table in d.plane.
type gateway struct {
	stopRelay, stopMaintain context.CancelFunc
	relayDone, maintainDone chan struct{}
	events                  *events // maintain's
}

// enable installs the table and starts the relay, unless they run. It
// reports whether it did.
func (d *daemon) enable() (changed bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return false, errors.New("pptp-alg is stopping")
	}
	if d.gw != nil {
		return false, nil
	}
	wanAddr, err := d.router.InterfaceIPv4(d.cfg.wan)
	if err != nil {
		return false, err
	}
	// Subscribe before installing, so that no deletion goes unseen. Owned
	// tables need no watch: no one else can delete from them. Without one
	// the kernel builds no notification for each element a call adds or
	// deletes: 100 connections setting up 2 calls each at once took about
	// 20 % longer with it.
	ev, err := d.router.Watch(d.cfg.table, append([]string{d.cfg.wan}, d.cfg.lan...), !d.owner)
	if err != nil {
		return false, fmt.Errorf("netlink notifications: %w", err)
	}
	// Listen before installing the redirect, so no connection is lost to it.
	ln, err := d.router.ListenRelay(int(d.cfg.relayPort))
	if err != nil {
		ev.close()
		return false, fmt.Errorf("relay: %w", err)
	}
	bridge := d.router.BridgeNetfilter(d.cfg.lan)
	plane, err := d.router.OpenPlane(nat.Config{
		Table: d.cfg.table, LAN: d.cfg.lan, WAN: d.cfg.wan,
		WANAddr: wanAddr, RelayPort: uint16(d.cfg.relayPort), FastPath: d.cfg.fastPath,
		RouterCalls: d.cfg.routerCalls, RelayMark: uint32(d.cfg.relayMark),
		TProxyMark: d.cfg.tproxyMark.mark, TProxyMask: d.cfg.tproxyMark.mask,
		RouteTable: uint32(d.cfg.routeTable), RulePriority: uint32(d.cfg.rulePriority),
		Redirect: d.redirectMode(bridge), Owner: d.owner,
	})
	if err != nil {
		ln.Close()
		ev.close()
		return false, fmt.Errorf("nftables: %w (needs root and nf_tables with maps, concatenations, notrack, redirect, tproxy; policy routing)", err)
	}
	d.wanAddr.Store(&wanAddr)
	d.plane = plane
	d.redirect.Store(d.redirectMode(bridge))
	d.logRelayMode(bridge)
	d.logOwner()
	d.logFastPath()
	// Idle expiry runs while calls exist: the first call's inbound half
	// wakes it.
	d.callStarted = make(chan struct{}, 1)
	d.table = alg.NewTable(startSignal{plane, d.callStarted}, d.cfg.limits, d.log)
	d.relay = &alg.Relay{
		Table:              d.table,
		OriginalDst:        d.router.OriginalDst,
		Dial:               d.dialServer,
		Check:              func(client, dst netip.AddrPort) error { return checkNoKernelHelper(d.router, client, dst) },
		ControlIdleTimeout: d.cfg.controlIdle,
		Log:                d.log,
	}
	relay := d.relay

	rctx, stopRelay := context.WithCancel(context.Background())
	mctx, stopMaintain := context.WithCancel(context.Background())
	g := &gateway{stopRelay: stopRelay, stopMaintain: stopMaintain, events: ev,
		relayDone: make(chan struct{}), maintainDone: make(chan struct{})}
	go func() {
		defer close(g.relayDone)
		d.fail(relay.Serve(rctx, ln))
	}()
	go func() {
		defer close(g.maintainDone)
		d.fail(d.maintain(mctx, ev))
	}()
	d.gw = g
	d.warnRuleset()
	return true, nil
}

// disable stops the relay, which releases every call, and deletes the
// table. It reports whether it did, and how many calls there were.
func (d *daemon) disable() (changed bool, calls int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	changed = d.gw != nil
	calls, err = d.disableLocked()
	return changed, calls, err
}

func (d *daemon) disableLocked() (calls int, err error) {
	g := d.gw
	if g == nil {
		return 0, nil
	}
	calls = len(d.table.Calls())
	// maintain first: it would install the table again.
	g.stopMaintain()
	<-g.maintainDone
	g.events.close()
	// Ending the control connections releases their calls while the table
	// is still there. A connection arriving in the moment between the
	// listener's close and the table's deletion is reset.
	g.stopRelay()
	<-g.relayDone
	err = d.plane.Close()
	d.gw, d.plane, d.table, d.relay = nil, nil, nil, nil
	return calls, err
}

// shutdown disables for good: no enable request may follow.
func (d *daemon) shutdown() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closing = true
	calls, err := d.disableLocked()
	if err != nil {
		d.log.Error("remove nftables table", "err", err)
	}
	d.log.Info("pptp-alg stopping", "calls_left", calls)
}

// fail hands a gateway goroutine's error to runDaemon, which ends.
func (d *daemon) fail(err error) {
	if err == nil {
		return
	}
	select {
	case d.failed <- err:
	default:
	}
}

// warnRuleset logs, one line each, what in the rest of the ruleset breaks
// PPTP passthrough: a kernel PPTP helper assignment, or a forward chain
// that drops pptp-alg's GRE.
func (d *daemon) warnRuleset() {
	rs, err := nat.InspectRuleset()
	if err != nil {
		d.log.Warn("cannot check the ruleset for the kernel PPTP helper", "err", err)
		return
	}
	for _, h := range rs.PPTPHelper {
		d.log.Warn("the kernel PPTP helper is assigned", "where", helperWhere(h), "effect", helperEffect(h.SeesRelayedConnections(d.redirect.Load())), "fix", helperFix(h))
	}
	if ok, detail, fix := forwardFinding(rs); !ok {
		d.log.Warn("the firewall drops forwarded PPTP GRE", "where", detail, "fix", fix)
	}
}

// redirectMode reports whether new LAN control connections go by the NAT
// redirect: unless --lan-control tproxy, and then while bridge (a LAN
// bridge whose frames pass the IP hooks, which lose tproxy's socket) is
// not "".
func (d *daemon) redirectMode(bridge string) bool {
	return !d.cfg.tproxy || bridge != ""
}

// logRelayMode says how new LAN control connections reach the relay, and
// why: bridge names the LAN bridge whose frames pass the IP hooks, if any.
func (d *daemon) logRelayMode(bridge string) {
	if !d.cfg.tproxy || bridge == "" {
		mode := "tproxy"
		if !d.cfg.tproxy {
			mode = "NAT redirect"
		}
		d.log.Info("LAN control connections by " + mode)
		return
	}
	msg := "bridge-nf-call-iptables=1: LAN control connections by NAT redirect"
	if !d.owner {
		msg += "; a `nft flush ruleset` may reset them"
	}
	d.log.Warn(msg, "bridge", bridge, "fix", "sysctl -w net.bridge.bridge-nf-call-iptables=0 (OpenWrt's default)")
}

// flushResets is what an old kernel's lack of the table flag owner costs.
const flushResets = "`nft flush ruleset` resets busy control connections taken by the NAT redirect (no table flag owner before Linux 5.12)"

// logOwner warns once, at enable, if the tables do not survive `nft flush
// ruleset`.
func (d *daemon) logOwner() {
	if !d.owner && !d.cfg.tproxy {
		d.log.Warn(flushResets)
	}
}

// checkNoKernelHelper refuses a control connection the kernel's PPTP
// helper is also rewriting: both translating one stream corrupts it.
func checkNoKernelHelper(r router, client, dst netip.AddrPort) error {
	helper, err := r.KernelHelper(client, dst)
	if err != nil || helper == "" {
		return err
	}
	return fmt.Errorf("the kernel %q helper is assigned to this connection; stop assigning it to tcp/1723 "+
		"in the output or input hook, where it meets the router's own relayed connections ('pptp-alg doctor' shows where; on OpenWrt fw4: %s)", helper, fixHelperFW4)
}
