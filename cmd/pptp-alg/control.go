package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pptp-alg/pptp-alg/alg"
	"github.com/pptp-alg/pptp-alg/nat"
)

// The control socket speaks one request line (a command name) and one JSON
// reply per connection. It is root-only (mode 0600).

// Mapping is one call as `pptp-alg mappings --json` prints it.
type Mapping struct {
	Client       string    `json:"client"`
	ClientCallID int       `json:"client_call_id"`
	Server       string    `json:"server"`
	ServerCallID int       `json:"server_call_id"`
	NATCallID    int       `json:"nat_call_id"`
	Established  bool      `json:"established"`
	PacketsIn    uint64    `json:"packets_in"`
	PacketsOut   uint64    `json:"packets_out"`
	BytesIn      uint64    `json:"bytes_in"`
	BytesOut     uint64    `json:"bytes_out"`
	Since        time.Time `json:"since"`
}

type daemon struct {
	cfg     daemonConfig
	log     *slog.Logger
	plane   *nat.Plane
	table   *alg.Table
	wanAddr atomic.Pointer[netip.Addr]
}

func (d *daemon) dialServer(ctx context.Context, server netip.AddrPort) (net.Conn, error) {
	dialer := net.Dialer{
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(*d.wanAddr.Load(), 0)),
		KeepAlive: 30 * time.Second,
	}
	return dialer.DialContext(ctx, "tcp4", server.String())
}

// maintain keeps the kernel state true to the call table: it restores the
// table after a flush, follows the WAN address, and expires idle calls.
func (d *daemon) maintain(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastExpire := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if ok, err := d.plane.Installed(); err != nil {
			d.log.Warn("check nftables table", "err", err)
		} else if !ok {
			d.log.Warn("nftables table is gone (ruleset flushed?); installing it again")
			if err := d.plane.Reinstall(); err != nil {
				d.log.Error("reinstall nftables table", "err", err)
				continue
			}
			if err := d.table.Reinstall(); err != nil {
				d.log.Error("reinstall call mappings", "err", err)
			}
		}
		if a, err := interfaceIPv4(d.cfg.wan); err == nil && a != *d.wanAddr.Load() {
			d.log.Warn("WAN address changed", "old", *d.wanAddr.Load(), "new", a)
			d.wanAddr.Store(&a)
			if err := d.plane.SetWANAddr(a); err != nil {
				d.log.Error("update WAN address", "err", err)
			}
		}
		if time.Since(lastExpire) >= expireEvery(d.cfg.idleTimeout) {
			lastExpire = time.Now()
			d.expire()
		}
	}
}

// expireEvery checks idleness often enough to release a call within a
// tenth of the idle timeout of its going quiet, but at most once a second.
func expireEvery(idle time.Duration) time.Duration {
	return max(time.Second, min(idle/10, 10*time.Second))
}

func (d *daemon) expire() {
	in, out, err := d.plane.Counters()
	if err != nil {
		d.log.Warn("read GRE counters", "err", err)
		return
	}
	d.table.Expire(d.cfg.idleTimeout, func(c alg.CallInfo) alg.Traffic {
		return traffic(c, in, out)
	})
}

func traffic(c alg.CallInfo, in map[nat.InKey]nat.Counter, out map[nat.OutKey]nat.Counter) alg.Traffic {
	i := in[nat.InKey{Server: c.Server, NATID: c.NATCallID}]
	var o nat.Counter
	if c.Established {
		o = out[nat.OutKey{Client: c.Client, Server: c.Server, ServerID: c.ServerCallID}]
	}
	return alg.Traffic{PacketsIn: i.Packets, BytesIn: i.Bytes, PacketsOut: o.Packets, BytesOut: o.Bytes}
}

func (d *daemon) mappings() ([]Mapping, error) {
	calls := d.table.Calls()
	in, out, err := d.plane.Counters()
	if err != nil {
		return nil, err
	}
	ms := make([]Mapping, 0, len(calls))
	for _, c := range calls {
		tr := traffic(c, in, out)
		ms = append(ms, Mapping{
			Client: c.Client.String(), ClientCallID: int(c.ClientCallID),
			Server: c.Server.String(), ServerCallID: int(c.ServerCallID),
			NATCallID: int(c.NATCallID), Established: c.Established,
			PacketsIn: tr.PacketsIn, PacketsOut: tr.PacketsOut,
			BytesIn: tr.BytesIn, BytesOut: tr.BytesOut,
			Since: c.Since.UTC().Truncate(time.Second),
		})
	}
	return ms, nil
}

func listenControl(path string) (*net.UnixListener, error) {
	// A socket left by a killed run is stale; one that answers is not.
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another pptp-alg is running", path)
	}
	os.Remove(path)
	old := umask(0o077)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

func (d *daemon) serveControl(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control socket: %w", err)
		}
		go d.answer(c)
	}
}

func (d *daemon) answer(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	var reply any
	switch cmd := strings.TrimSpace(line); cmd {
	case "mappings":
		ms, err := d.mappings()
		if err != nil {
			reply = controlError{err.Error()}
		} else {
			reply = ms
		}
	default:
		reply = controlError{fmt.Sprintf("unknown request %q", cmd)}
	}
	json.NewEncoder(c).Encode(reply)
}

type controlError struct {
	Error string `json:"error"`
}

// ask sends one request to the daemon and decodes its reply into v.
func ask(ctx context.Context, socket, request string, v any) error {
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("cannot reach the daemon at %s (is `pptp-alg run` running?): %w", socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, request); err != nil {
		return err
	}
	raw, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("daemon reply: %w", err)
	}
	var ce controlError
	if json.Unmarshal(raw, &ce) == nil && ce.Error != "" {
		return errors.New("daemon: " + ce.Error)
	}
	return json.Unmarshal(raw, v)
}
