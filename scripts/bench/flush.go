package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pptp-alg/pptp-alg/alg"
)

// The flush section: `nft flush ruleset`, as an admin or a firewall reload
// does it, while control connections are busy. Were the daemon's table
// gone, a relayed packet would go out untranslated, reach the client from
// the wrong address and port and draw a RST, which ends a control
// connection and its calls. Its tables carry the kernel's flag owner, so
// the flush leaves them.

// flushResult is what the flushes cost.
type flushResult struct {
	flushes, conns, calls int
	reset                 int           // control connections that failed
	firstErr              string        // the first failure, if any
	callsLost             int           // calls the daemon or the kernel lost
	echoes                uint64        // Echo-Request/Reply exchanges meanwhile
	restore               time.Duration // longest from a flush until the table was back, as nft saw it
}

// flushGap is the quiet time after the table is back before the next
// flush.
const flushGap = 200 * time.Millisecond

// echoEvery paces each connection's Echo-Requests.
const echoEvery = 10 * time.Millisecond

// flushSection runs on the scale lab, last: it leaves the router without
// fw4's ruleset. Its daemon runs in the default mode, the NAT redirect.
func (b *bench) flushSection(ctx context.Context) error {
	r := b.scale
	res := flushResult{flushes: b.opt.flushes, conns: b.opt.flushConns, calls: b.opt.flushConns}
	conns := make([]*pns, res.conns)
	defer func() {
		for _, p := range conns {
			if p != nil {
				p.Close()
			}
		}
	}()
	if err := parallel(ctx, len(conns), 16, func(i int) (err error) {
		if conns[i], err = r.dial(r.lab.Hosts[i%len(r.lab.Hosts)]); err != nil {
			return err
		}
		_, err = conns[i].open([]uint16{1}, 1)
		return err
	}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if in, out, err := r.kernelCalls(ctx); err != nil {
		return err
	} else if in != res.calls || out != res.calls {
		return fmt.Errorf("kernel holds %d inbound and %d outbound GRE mappings, want %d", in, out, res.calls)
	}

	// Steady traffic on every connection until stop.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var echoes atomic.Uint64
	for i, p := range conns {
		wg.Go(func() {
			err := p.echoUntil(stop, &echoes)
			if err != nil {
				mu.Lock()
				res.reset++
				if res.firstErr == "" {
					res.firstErr = fmt.Sprintf("connection %d: %v", i+1, err)
				}
				mu.Unlock()
			}
		})
	}
	b.progress("flush: %d × nft flush ruleset during Echo traffic on %d connections", res.flushes, res.conns)
	err := func() error {
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
		for range res.flushes {
			if _, err := r.lab.Run(ctx, r.lab.Router, "nft", "flush", "ruleset"); err != nil {
				return err
			}
			start := time.Now()
			for {
				if _, err := r.lab.Run(ctx, r.lab.Router, "nft", "list", "table", "ip", "pptp_alg"); err == nil {
					break
				}
				if time.Since(start) > 10*time.Second {
					return fmt.Errorf("the daemon's table is not back 10 s after a flush")
				}
				time.Sleep(5 * time.Millisecond) // leave the CPU to the daemon
			}
			res.restore = max(res.restore, time.Since(start))
			if err := sleep(ctx, flushGap); err != nil {
				return err
			}
		}
		return sleep(ctx, time.Second)
	}()
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	res.echoes = echoes.Load()

	// A call is lost if the daemon no longer lists it or the kernel lacks
	// one of its mappings. The elements may take the daemon a moment.
	n, err := r.mappings(ctx, b.algBin)
	if err != nil {
		return err
	}
	var in, out int
	for start := time.Now(); ; {
		if in, out, err = r.kernelCalls(ctx); err != nil {
			return err
		}
		if (in >= n && out >= n) || time.Since(start) > 5*time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	res.callsLost = res.calls - min(n, in, out)
	b.res.flush = &res
	return nil
}

// echoUntil sends Echo-Requests and reads their replies until stop is
// closed, and returns the first failure: a reset, a close, or a reply that
// does not come within ioTimeout.
func (p *pns) echoUntil(stop <-chan struct{}, n *atomic.Uint64) error {
	t := time.NewTicker(echoEvery)
	defer t.Stop()
	for id := uint32(1); ; id++ {
		select {
		case <-stop:
			return nil
		case <-t.C:
		}
		p.out = (&alg.EchoRequest{Identifier: id}).Append(p.out[:0])
		if err := p.flush(); err != nil {
			return err
		}
		for {
			m, err := p.read()
			if err != nil {
				return err
			}
			if msgType(m) == alg.TypeEchoReply && binary.BigEndian.Uint32(m[12:]) == id {
				break
			}
		}
		n.Add(1)
	}
}
