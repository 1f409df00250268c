package main

import (
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

func (r *rig) callsOf(clientIDs, serverIDs []uint16) (calls, error) {
	cs := calls{clientIDs: clientIDs, serverIDs: serverIDs}
	for _, s := range serverIDs {
		pc, ok := r.srv.lookup(s)
		if !ok {
			return cs, fmt.Errorf("server has no call %d", s)
		}
		cs.peer = pc.Peer
		cs.peerIDs = append(cs.peerIDs, pc.PeerID)
	}
	return cs, nil
}

// openCall sets up the call GRE is measured on, from h1, and holds it; it
// does nothing if the call is up.
func (r *rig) openCall() error {
	if r.callConn != nil {
		return nil
	}
	p, err := r.dial(r.lab.Hosts[0])
	if err != nil {
		return err
	}
	sids, err := p.open([]uint16{greCallID}, 1)
	if err != nil {
		p.Close()
		return err
	}
	if r.call, err = r.callsOf([]uint16{greCallID}, sids); err != nil {
		p.Close()
		return err
	}
	r.callConn = p
	return nil
}

// rate sends GRE one way on cs for dur and returns the packets per second
// counted at the receiver.
func (r *rig) rate(d direction, cs calls, payload int, dur time.Duration) (float64, error) {
	if d == inbound {
		return r.count(r.srvGRE, r.h1GRE, flow{dst: cs.peer, keys: cs.peerIDs, payload: payload}, keysOf(cs.clientIDs), dur)
	}
	return r.count(r.h1GRE, r.srvGRE, flow{dst: r.lab.ServerAddr, keys: cs.serverIDs, payload: payload}, keysOf(cs.serverIDs), dur)
}

// udpRate sends one UDP flow from h1 to the server: the price the setup
// puts on traffic that is not PPTP.
func (r *rig) udpRate(dur time.Duration) (float64, error) {
	return r.count(r.h1UDP, r.srvUDP, flow{dst: r.lab.ServerAddr, keys: []uint16{udpPort}, payload: 64}, keysOf([]uint16{udpPort}), dur)
}

// count blasts f from one socket for dur and returns the packets per
// second that reached the other with a wanted key.
func (r *rig) count(from, to *rawSocket, f flow, want *keySet, dur time.Duration) (float64, error) {
	to.want.Store(want)
	good0, bad0 := to.good.Load(), to.bad.Load()
	br, err := from.blast(f, dur, senderCPU)
	if err != nil {
		return 0, err
	}
	// What is still queued for the receiver was forwarded in time. Wait
	// for it, so that it counts here and not in this socket's next window.
	good := to.drain()
	good, bad := good-good0, to.bad.Load()-bad0
	pps := float64(good) / br.elapsed.Seconds()
	r.log.Debug("rate", "proto", to.p.name, "to", f.dst, "payload", f.payload, "keys", len(f.keys), "sent", br.sent, "received", good, "wrong_key", bad,
		"pps", int(pps), "cpu", br.cpu.Round(time.Millisecond), "per_cpu_s", int(float64(good)/br.cpu.Seconds()))
	if bad > good/100 {
		return 0, fmt.Errorf("%s to %v: %d packets arrived with a wrong key (%d right)", to.p.name, f.dst, bad, good)
	}
	return pps, nil
}

// greSection measures GRE forwarding through the three setups at once,
// each lab with one call from h1, cell by cell: each size and direction,
// then the UDP flow.
func (b *bench) greSection() error {
	for _, r := range b.rigs {
		if err := r.openCall(); err != nil {
			return fmt.Errorf("%v: call: %w", r.setup, err)
		}
	}
	b.res.gre = map[greKey]*cell{}
	for _, size := range b.opt.sizes {
		for _, d := range []direction{outbound, inbound} {
			var ss []sender
			for _, r := range b.rigs {
				ss = append(ss, func(w time.Duration) (float64, error) { return r.rate(d, r.call, size, w) })
			}
			c, err := b.alternate(fmt.Sprintf("GRE %v %d B", d, size), ss)
			if err != nil {
				return err
			}
			b.res.gre[greKey{d, size, false}] = c
		}
	}
	var ss []sender
	for _, r := range b.rigs {
		ss = append(ss, r.udpRate)
	}
	c, err := b.alternate("UDP LAN→WAN 64 B", ss)
	if err != nil {
		return err
	}
	b.res.gre[greKey{outbound, 64, true}] = c
	return nil
}

// profileGRE records a kernel profile of each setup forwarding GRE, one
// setup, direction and size at a time, apart from the measurement (perf
// slows what it watches).
func (b *bench) profileGRE() error {
	if b.opt.profile == "" {
		return nil
	}
	for _, r := range b.rigs {
		for _, size := range b.opt.sizes {
			for _, d := range []direction{outbound, inbound} {
				stop := b.perfKernel(fmt.Sprintf("gre-%d-%s-%d", r.setup, [...]string{"lan-wan", "wan-lan"}[d], size))
				_, err := r.rate(d, r.call, size, time.Second)
				stop()
				if err != nil {
					return fmt.Errorf("%v: %w", r.setup, err)
				}
			}
		}
		stop := b.perfKernel(fmt.Sprintf("udp-%d", r.setup))
		_, err := r.udpRate(time.Second)
		stop()
		if err != nil {
			return fmt.Errorf("%v: udp: %w", r.setup, err)
		}
	}
	return nil
}
