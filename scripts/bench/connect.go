package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

// The connect section: how long a new control connection takes to carry
// its first call, on an idle router and on one whose conntrack table holds
// many unrelated flows, as a busy home router's does. Anything that walks
// the table per connection shows here.

// Conditions of the connect section.
const (
	condIdle   = iota // no flows but the labs' own
	condLoaded        // with -connect-flows unrelated UDP flows
	numConds
)

// maxFlows is the most flows the connect section makes: one per UDP source
// port from 1024.
const maxFlows = 60000

// connectPace spaces a lab's new connections: fw4 admits 25 a second to
// the router itself, which pptp-alg's relay is (burst 50), and a SYN it
// drops costs a second's retransmission.
const connectPace = 50 * time.Millisecond

// connectSection times opt.connectConns control connections per setup
// (kernel helper, pptp-alg) and condition, one after another, the setups
// taking turns connection by connection and the conditions round by round.
func (b *bench) connectSection(ctx context.Context) error {
	setups := []setup{setupHelper, setupALG}
	for _, s := range setups {
		restore, err := b.rigs[s].keepUDPFlows(ctx)
		if err != nil {
			return err
		}
		defer restore()
	}
	per := (b.opt.connectConns + b.opt.connectRounds - 1) / b.opt.connectRounds
	for round := range b.opt.connectRounds {
		for cond := range numConds {
			b.progress("control connection set-up: round %d/%d, %s", round+1, b.opt.connectRounds, condName(cond))
			if cond == condLoaded {
				for _, s := range setups {
					n, err := b.rigs[s].fillConntrack(ctx, b.opt.connectFlows)
					if err != nil {
						return fmt.Errorf("%v: %w", s, err)
					}
					b.res.connectFlows[s] = n
				}
			}
			for i := range per {
				for j := range setups {
					s := setups[(i+j+round)%len(setups)]
					r := b.rigs[s]
					d, err := r.timeConnect(r.lab.Hosts[1])
					if err != nil {
						return fmt.Errorf("%v, %s, connection %d: %w", s, condName(cond), i+1, err)
					}
					b.res.connect[s][cond] = append(b.res.connect[s][cond], d)
				}
				if err := sleep(ctx, connectPace); err != nil {
					return err
				}
			}
			if cond == condLoaded {
				for _, s := range setups {
					if err := b.rigs[s].clearFlows(ctx); err != nil {
						return fmt.Errorf("%v: %w", s, err)
					}
				}
			}
		}
	}
	return nil
}

func condName(cond int) string {
	return [...]string{"idle router", "with unrelated flows"}[cond]
}

// timeConnect opens a control connection from h, starts it
// (Start-Control-Connection-Request/Reply) and places one call
// (Outgoing-Call-Request/Reply), and returns how long that took from the
// connect. The connection is closed after.
func (r *rig) timeConnect(h lab.Host) (time.Duration, error) {
	var c net.Conn
	var start time.Time
	err := r.lab.Do(h.NS, func() (err error) {
		start = time.Now()
		c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(r.lab.ServerAddr, 1723).String(), dialTimeout)
		return err
	})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	p, err := startPNS(c)
	if err != nil {
		return 0, err
	}
	if _, err := p.open([]uint16{1}, 1); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// keepUDPFlows raises the router's timeout for UDP flows that saw no
// reply (30 s by default) for the section, so that the flows it makes stay
// while it measures; the returned function puts the old value back.
func (r *rig) keepUDPFlows(ctx context.Context) (restore func(), err error) {
	const key = "net.netfilter.nf_conntrack_udp_timeout"
	old, err := r.lab.Run(ctx, r.lab.Router, "sysctl", "-n", key)
	if err != nil {
		return nil, err
	}
	if _, err := r.lab.Run(ctx, r.lab.Router, "sysctl", "-qw", key+"=3600"); err != nil {
		return nil, err
	}
	return func() {
		r.lab.Run(context.Background(), r.lab.Router, "sysctl", "-qw", key+"="+strings.TrimSpace(old))
	}, nil
}

// fillConntrack sends one UDP packet from h1 to the server's discard port
// from each of n source ports: n flows through the router, each a
// conntrack entry, masqueraded under fw4. Packets the veth backlog drops
// are sent again, at most 5 times. It returns how many flows the router
// tracks.
func (r *rig) fillConntrack(ctx context.Context, n int) (int, error) {
	pkts := make([][]byte, n)
	for i := range pkts {
		b := make([]byte, 8+8)
		binary.BigEndian.PutUint16(b[0:], uint16(1024+i))
		binary.BigEndian.PutUint16(b[2:], udpPort)
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
		pkts[i] = b
	}
	dst := &net.IPAddr{IP: r.lab.ServerAddr.AsSlice()}
	ms := make([]ipv4.Message, batch)
	got := 0
	for range 5 {
		for lo := 0; lo < n; lo += batch {
			hi := min(lo+batch, n)
			for i := lo; i < hi; i++ {
				ms[i-lo] = ipv4.Message{Buffers: [][]byte{pkts[i]}, Addr: dst}
			}
			for sent := lo; sent < hi; {
				k, err := r.h1UDP.pc.WriteBatch(ms[sent-lo:hi-lo], 0)
				if err != nil {
					return 0, fmt.Errorf("send flows: %w", err)
				}
				sent += k
			}
			// Let the router's softirq keep up.
			time.Sleep(100 * time.Microsecond)
		}
		var err error
		if got, err = r.flows(ctx); err != nil {
			return 0, err
		}
		if got >= n {
			return got, nil
		}
	}
	return 0, fmt.Errorf("the router tracks %d of the %d flows sent", got, n)
}

// flowCount reads conntrack's "N flow entries have been shown".
var flowCount = regexp.MustCompile(`(\d+) flow entries have been shown`)

// flows counts the router's conntrack entries of UDP to the discard port:
// the flows fillConntrack makes (and the GRE section's UDP flow).
func (r *rig) flows(ctx context.Context) (int, error) {
	out, err := r.lab.Command(ctx, r.lab.Router, "conntrack", "-L", "-p", "udp", "--orig-port-dst", strconv.Itoa(udpPort)).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("conntrack -L: %w: %s", err, lastLine(out))
	}
	m := flowCount.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("conntrack -L: no count in %q", lastLine(out))
	}
	return strconv.Atoi(string(m[1]))
}

// clearFlows deletes the flows fillConntrack made.
func (r *rig) clearFlows(ctx context.Context) error {
	out, err := r.lab.Command(ctx, r.lab.Router, "conntrack", "-D", "-p", "udp", "--orig-port-dst", strconv.Itoa(udpPort)).CombinedOutput()
	// conntrack exits 1 when it deleted nothing.
	if err != nil && !strings.Contains(string(out), "0 flow entries") {
		return fmt.Errorf("conntrack -D: %w: %s", err, lastLine(out))
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
