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
	"strings"
	"time"

	"github.com/pptp-alg/pptp-alg/alg"
	"github.com/pptp-alg/pptp-alg/conntrack"
	"github.com/pptp-alg/pptp-alg/nat"
)

const runUsage = `Usage: pptp-alg run --lan IFACE[,IFACE...] --wan IFACE [OPTIONS]

Run the PPTP passthrough gateway in the foreground, logging to stderr, the
way procd and systemd expect. It is ready once its control socket exists.
On SIGTERM or SIGINT it removes every piece of kernel state it installed
(its nftables table "pptp_alg") and exits 0.

PPTP control connections from the LAN interfaces to TCP port 1723 are
redirected to a local relay, which connects to the server from the WAN
address and translates call IDs. GRE is translated in the kernel.

Options:
`

type daemonConfig struct {
	lan         []string
	wan         string
	socket      string
	relayPort   uint
	idleTimeout time.Duration
	limits      alg.Limits
	table       string
	verbose     bool
}

func parseRunFlags(args []string, stderr io.Writer) (daemonConfig, error) {
	cfg := daemonConfig{limits: alg.DefaultLimits}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, runUsage)
		fs.PrintDefaults()
	}
	lan := fs.String("lan", "", "LAN `interfaces`, comma-separated (required)")
	fs.StringVar(&cfg.wan, "wan", "", "WAN `interface` (required); its first IPv4 address is the NAT address")
	fs.StringVar(&cfg.socket, "socket", defaultSocket, "control socket `path`")
	fs.UintVar(&cfg.relayPort, "relay-port", 1724, "local TCP `port` the control connections are redirected to")
	fs.DurationVar(&cfg.idleTimeout, "idle-timeout", 5*time.Minute, "release a call whose GRE has been idle this `long`")
	fs.IntVar(&cfg.limits.ConnsPerClient, "max-conns-per-client", cfg.limits.ConnsPerClient, "control connections per LAN host")
	fs.IntVar(&cfg.limits.CallsPerClient, "max-calls-per-client", cfg.limits.CallsPerClient, "calls per LAN host")
	fs.IntVar(&cfg.limits.Calls, "max-calls", cfg.limits.Calls, "calls in all")
	fs.StringVar(&cfg.table, "table", "pptp_alg", "`name` of the nftables table (family ip) the daemon owns")
	fs.BoolVar(&cfg.verbose, "verbose", false, "log debug detail")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, usageError{err}
	}
	if fs.NArg() > 0 {
		return cfg, usagef("run: unexpected argument %q", fs.Arg(0))
	}
	for _, l := range strings.Split(*lan, ",") {
		if l = strings.TrimSpace(l); l != "" {
			cfg.lan = append(cfg.lan, l)
		}
	}
	switch {
	case len(cfg.lan) == 0:
		return cfg, usagef("run: --lan is required")
	case cfg.wan == "":
		return cfg, usagef("run: --wan is required")
	case cfg.relayPort == 0 || cfg.relayPort > 65535 || cfg.relayPort == 1723:
		return cfg, usagef("run: --relay-port must be 1-65535 and not 1723")
	case cfg.limits.ConnsPerClient < 1 || cfg.limits.CallsPerClient < 1 || cfg.limits.Calls < 1:
		return cfg, usagef("run: limits must be at least 1")
	case cfg.idleTimeout < time.Second:
		return cfg, usagef("run: --idle-timeout must be at least 1s")
	}
	return cfg, nil
}

func runDaemon(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, err := parseRunFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	for _, name := range append([]string{cfg.wan}, cfg.lan...) {
		if _, err := net.InterfaceByName(name); err != nil {
			return usagef("interface %s not found", name)
		}
	}
	wanAddr, err := interfaceIPv4(cfg.wan)
	if err != nil {
		return usageError{err}
	}

	// Listen before installing the redirect, so no connection is lost to it.
	ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", cfg.relayPort))
	if err != nil {
		return usagef("relay: %v", err)
	}
	defer ln.Close()

	plane, err := nat.Open(nat.Config{
		Table: cfg.table, LAN: cfg.lan, WAN: cfg.wan,
		WANAddr: wanAddr, RelayPort: uint16(cfg.relayPort),
	})
	if err != nil {
		return usagef("nftables: %v (needs root and nf_tables with maps, concatenations, notrack, redirect)", err)
	}
	defer func() {
		if err := plane.Close(); err != nil {
			log.Error("remove nftables table", "err", err)
		}
	}()

	tracker, err := conntrack.Open()
	if err != nil {
		return usagef("%v (needs ctnetlink)", err)
	}
	defer tracker.Close()

	table := alg.NewTable(plane, cfg.limits, log)
	d := &daemon{cfg: cfg, log: log, plane: plane, table: table}
	d.wanAddr.Store(&wanAddr)

	relay := &alg.Relay{
		Table:       table,
		OriginalDst: conntrack.OriginalDst,
		Dial:        d.dialServer,
		Check:       func(c net.Conn) error { return checkNoKernelHelper(tracker, c) },
		Log:         log,
	}

	ctl, err := listenControl(cfg.socket)
	if err != nil {
		return usageError{err}
	}
	log.Info("pptp-alg ready", "version", version, "lan", strings.Join(cfg.lan, ","),
		"wan", cfg.wan, "wan_addr", wanAddr, "relay_port", cfg.relayPort, "socket", cfg.socket)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 3)
	go func() { done <- relay.Serve(ctx, ln) }()
	go func() { done <- d.serveControl(ctx, ctl) }()
	go func() { done <- d.maintain(ctx) }()
	err = <-done
	cancel()
	<-done
	<-done
	log.Info("pptp-alg stopping", "calls_left", len(table.Calls()))
	return err
}

// interfaceIPv4 returns the first IPv4 address of an interface.
func interfaceIPv4(name string) (netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %s: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("interface %s: %w", name, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("interface %s has no IPv4 address", name)
}

// checkNoKernelHelper refuses a control connection the kernel's PPTP
// helper is also rewriting: both translating one stream corrupts it.
func checkNoKernelHelper(t *conntrack.Tracker, c net.Conn) error {
	dst, err := conntrack.OriginalDst(c)
	if err != nil {
		return err
	}
	helper, err := t.Helper(addrPort(c.RemoteAddr()), dst)
	if err != nil || helper == "" {
		return err
	}
	return fmt.Errorf("the kernel %q helper is assigned to this connection; stop assigning it "+
		"(OpenWrt: remove kmod-nf-nathelper-extra or set the lan zone's helper list without pptp)", helper)
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
