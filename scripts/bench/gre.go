package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// greCallID is the client's call ID of the one call GRE is measured on.
const greCallID = 0x1234

// direction of GRE through the router.
type direction int

const (
	outbound direction = iota // LAN host to server
	inbound                   // server to LAN host
)

func (d direction) String() string { return [...]string{"LAN→WAN", "WAN→LAN"}[d] }

// calls is what GRE needs to know of some calls of h1: the keys on the
// wire each way and where the server sends.
type calls struct {
	serverIDs []uint16   // outbound keys
	peerIDs   []uint16   // inbound keys, as the server sees the calls
	peer      netip.Addr // where the server sends (h1, or the router's WAN)
	clientIDs []uint16   // inbound keys after the router, at h1
}

func (b *bench) callsOf(clientIDs, serverIDs []uint16) (calls, error) {
	cs := calls{clientIDs: clientIDs, serverIDs: serverIDs}
	for _, s := range serverIDs {
		pc, ok := b.srv.lookup(s)
		if !ok {
			return cs, fmt.Errorf("server has no call %d", s)
		}
		cs.peer = pc.Peer
		cs.peerIDs = append(cs.peerIDs, pc.PeerID)
	}
	return cs, nil
}

// rate sends GRE one way on cs for dur and returns the packets per second
// counted at the receiver.
func (b *bench) rate(d direction, cs calls, payload int, dur time.Duration) (float64, error) {
	if d == inbound {
		return b.count(b.srvGRE, b.h1GRE, flow{dst: cs.peer, keys: cs.peerIDs, payload: payload}, keysOf(cs.clientIDs), dur)
	}
	return b.count(b.h1GRE, b.srvGRE, flow{dst: b.lab.ServerAddr, keys: cs.serverIDs, payload: payload}, keysOf(cs.serverIDs), dur)
}

// udpRate sends one UDP flow from h1 to the server: the price the setup
// puts on traffic that is not PPTP.
func (b *bench) udpRate(dur time.Duration) (float64, error) {
	return b.count(b.h1UDP, b.srvUDP, flow{dst: b.lab.ServerAddr, keys: []uint16{udpPort}, payload: 64}, keysOf([]uint16{udpPort}), dur)
}

// count blasts f from one socket for dur and returns the packets per
// second that reached the other with a wanted key.
func (b *bench) count(from, to *rawSocket, f flow, want *keySet, dur time.Duration) (float64, error) {
	d := to.p.name
	to.want.Store(want)
	good0, bad0 := to.good.Load(), to.bad.Load()
	br, err := from.blast(f, dur, senderCPU)
	if err != nil {
		return 0, err
	}
	sent, elapsed := br.sent, br.elapsed
	// What is still queued for the receiver was forwarded in time: wait
	// until the count stops moving.
	good := to.good.Load()
	for range 50 {
		time.Sleep(50 * time.Millisecond)
		g := to.good.Load()
		if g == good {
			break
		}
		good = g
	}
	good, bad := good-good0, to.bad.Load()-bad0
	pps := float64(good) / elapsed.Seconds()
	b.log.Info("rate", "proto", d, "to", f.dst, "payload", f.payload, "keys", len(f.keys), "sent", sent, "received", good, "wrong_key", bad,
		"pps", int(pps), "cpu", br.cpu.Round(time.Millisecond), "per_cpu_s", int(float64(good)/br.cpu.Seconds()))
	if bad > good/100 {
		return 0, fmt.Errorf("%s to %v: %d packets arrived with a wrong key (%d right)", d, f.dst, bad, good)
	}
	return pps, nil
}

// medianRate repeats rate and returns the median and every sample.
func (b *bench) medianRate(d direction, cs calls, payload int) (sample, error) {
	var s sample
	for range b.opt.reps {
		r, err := b.rate(d, cs, payload, b.opt.duration)
		if err != nil {
			return s, err
		}
		s.all = append(s.all, r)
	}
	s.median = median(s.all)
	return s, nil
}

// greRates measures GRE forwarding on one call from h1, each size and
// direction once.
func (b *bench) greRates(ctx context.Context, s setup) (err error) {
	p, err := b.dial(b.lab.Hosts[0])
	if err != nil {
		return err
	}
	defer p.Close()
	sids, err := p.open([]uint16{greCallID}, 1)
	if err != nil {
		return err
	}
	cs, err := b.callsOf([]uint16{greCallID}, sids)
	if err != nil {
		return err
	}
	// Warm-up: neighbour entries, and the conntrack entries the kernel
	// helper creates from its expectations.
	for _, d := range []direction{outbound, inbound} {
		if _, err := b.rate(d, cs, 64, 300*time.Millisecond); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	stopPerf := b.perfKernel(fmt.Sprintf("gre-%d", s))
	for _, size := range b.opt.sizes {
		for _, d := range []direction{outbound, inbound} {
			r, err := b.rate(d, cs, size, b.opt.duration)
			if err != nil {
				stopPerf()
				return err
			}
			b.res.addGRE(greKey{s, d, size, false}, r)
		}
	}
	if _, err := b.udpRate(300 * time.Millisecond); err != nil {
		stopPerf()
		return fmt.Errorf("udp warm-up: %w", err)
	}
	r, err := b.udpRate(b.opt.duration)
	stopPerf()
	if err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	b.res.addGRE(greKey{s, outbound, 64, true}, r)
	return p.clear([]uint16{greCallID}, 1)
}
