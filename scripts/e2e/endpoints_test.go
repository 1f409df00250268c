package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pptp-alg/pptp-alg/scripts/fw4"
	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

// The PPTP that a router without pptp-alg carries besides its LAN's
// passthrough (issue 10): the router's own client (R1), pptpd on the router
// reached from the WAN (R2) and from the LAN (R3), a port-forwarded server
// on a LAN host (R4). Each case runs twice, on the same fw4 router without
// pptp-alg (the baseline) and with it, against real pptpd and pptp-linux.
// A tunnel counts when the client got a Connected Outgoing-Call-Reply and
// PPP frames came back through it.

// The admin's fw4 rules of the cases, as the issue describes them.
var (
	allowGRE  = fw4.Rule{Name: "Allow-GRE", Proto: "gre"}
	allowPPTP = fw4.Rule{Name: "Allow-PPTP", Proto: "tcp", Port: 1723}
)

// portForward is two `config redirect` sections: tcp/1723 and proto gre
// from the WAN to the LAN host at addr.
func portForward(addr netip.Addr) []fw4.Redirect {
	return []fw4.Redirect{
		{Name: "PPTP-to-NAS", Proto: "tcp", Port: 1723, To: addr.String()},
		{Name: "GRE-to-NAS", Proto: "gre", To: addr.String()},
	}
}

// wanHost is the WAN side as a PPTP client: the server's namespace.
func wanHost(l *lab.Lab) lab.Host { return lab.Host{Name: "wan", NS: l.Server, Addr: l.ServerAddr} }

// tunnel is one PPTP client of a case.
type tunnel struct {
	from lab.Host
	to   netip.Addr
}

func (tu tunnel) String() string { return fmt.Sprintf("%s->%v", tu.from.Name, tu.to) }

// endpointFrames is how many PPP frames each tunnel must echo.
const endpointFrames = 20

// runTunnels starts every tunnel at once and reports, for each, nil if it
// came up and echoed endpointFrames frames, or why not.
func (r *router) runTunnels(t *testing.T, tunnels []tunnel) []error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var clients []*lab.Client
	for _, tu := range tunnels {
		c, err := r.StartPPTPClientTo(tu.from, tu.to)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
	}
	errs := make([]error, len(clients))
	for i, c := range clients {
		// Each gets 8 s to come up: a call whose GRE is dropped never
		// does, and pptp-linux may keep trying.
		wctx, wcancel := context.WithTimeout(ctx, 8*time.Second)
		_, err := c.WaitUp(wctx)
		wcancel()
		if err != nil {
			errs[i] = err
		}
	}
	for i, c := range clients {
		if errs[i] != nil {
			continue
		}
		ectx, ecancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := c.Echo(ectx, endpointFrames)
		ecancel()
		if err != nil || n != endpointFrames {
			errs[i] = fmt.Errorf("%d of %d PPP frames came back: %v", n, endpointFrames, err)
		}
	}
	return errs
}

// endpointCase is one router set-up and the tunnels that run on it at once.
type endpointCase struct {
	name    string
	opt     lab.Options
	servers func(ctx context.Context, r *router) error // pptpd instances besides the lab server's
	tunnels func(r *router) []tunnel
	// baseline is how many tunnels the router without pptp-alg carries
	// (measured here and in the issue); pptp-alg must carry all of them.
	baseline int
	// doctor are lines `pptp-alg doctor` must print with pptp-alg.
	doctor []string
}

// Doctor's lines about the router's own PPTP.
const (
	doctorRouterCalls = "ok    router's own PPTP: relayed with the LAN's"
	doctorServerWAN   = "ok    PPTP server: listens on 203.0.113.1:1723; the input chain accepts tcp/1723 and GRE"
	doctorServerLAN   = "ok    PPTP server: listens on tcp/1723 of LAN addresses only"
)

func endpointCases() []endpointCase {
	server := func(ctx context.Context, r *router) error { return r.StartPPTPD(ctx) }
	return []endpointCase{
		{
			name: "R1 router client", opt: lab.Options{Hosts: 1, WANInput: []fw4.Rule{allowGRE}},
			servers:  server,
			tunnels:  func(r *router) []tunnel { return []tunnel{{r.RouterHost(), r.ServerAddr}} },
			baseline: 1,
			doctor:   []string{doctorRouterCalls},
		},
		{
			// Beyond the anchors: no Allow-GRE; pptp-alg's input include
			// accepts the router's own translated GRE.
			name: "R1 router client without Allow-GRE", opt: lab.Options{Hosts: 1},
			servers:  server,
			tunnels:  func(r *router) []tunnel { return []tunnel{{r.RouterHost(), r.ServerAddr}} },
			baseline: 0,
			doctor:   []string{doctorRouterCalls},
		},
		{
			name: "R1 and a LAN client to the same server", opt: lab.Options{Hosts: 1, WANInput: []fw4.Rule{allowGRE}},
			servers: server,
			tunnels: func(r *router) []tunnel {
				return []tunnel{{r.RouterHost(), r.ServerAddr}, {r.Hosts[0], r.ServerAddr}}
			},
			baseline: 1,
		},
		{
			name: "R2 pptpd on the router from the WAN", opt: lab.Options{Hosts: 1, WANInput: []fw4.Rule{allowPPTP, allowGRE}},
			servers:  func(ctx context.Context, r *router) error { return r.StartPPTPDOn(ctx, r.Router, r.WANAddr) },
			tunnels:  func(r *router) []tunnel { return []tunnel{{wanHost(r.Lab), r.WANAddr}} },
			baseline: 1,
			doctor:   []string{doctorServerWAN},
		},
		{
			name: "R3 pptpd on the router from the LAN", opt: lab.Options{Hosts: 1},
			servers:  func(ctx context.Context, r *router) error { return r.StartPPTPDOn(ctx, r.Router, r.LANAddr) },
			tunnels:  func(r *router) []tunnel { return []tunnel{{r.Hosts[0], r.LANAddr}} },
			baseline: 1,
			doctor:   []string{doctorServerLAN},
		},
		{
			name: "R4 port-forwarded LAN server", opt: lab.Options{Hosts: 2, Redirects: portForward(lab.HostAddr(2))},
			servers: func(ctx context.Context, r *router) error {
				return r.StartPPTPDOn(ctx, r.Hosts[1].NS, r.Hosts[1].Addr)
			},
			tunnels:  func(r *router) []tunnel { return []tunnel{{wanHost(r.Lab), r.WANAddr}} },
			baseline: 1,
		},
		{
			name: "R4 and an outbound LAN tunnel", opt: lab.Options{Hosts: 2, Redirects: portForward(lab.HostAddr(2))},
			servers: func(ctx context.Context, r *router) error {
				if err := r.StartPPTPD(ctx); err != nil {
					return err
				}
				return r.StartPPTPDOn(ctx, r.Hosts[1].NS, r.Hosts[1].Addr)
			},
			tunnels: func(r *router) []tunnel {
				return []tunnel{{wanHost(r.Lab), r.WANAddr}, {r.Hosts[0], r.ServerAddr}}
			},
			baseline: 1,
		},
	}
}

// TestEndpoints runs every case without pptp-alg and with it.
func TestEndpoints(t *testing.T) {
	var summary []string
	for _, c := range endpointCases() {
		for _, withALG := range []bool{false, true} {
			setup := "no ALG"
			if withALG {
				setup = "pptp-alg"
			}
			t.Run(c.name+"/"+setup, func(t *testing.T) {
				opt := c.opt
				opt.Firewall = lab.FirewallFW4
				r := newRouterWith(t, opt, withALG)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := c.servers(ctx, r); err != nil {
					t.Fatal(err)
				}
				tunnels := c.tunnels(r)
				errs := r.runTunnels(t, tunnels)
				up := 0
				for i, err := range errs {
					if err == nil {
						up++
						t.Logf("%v: up, %d frames echoed", tunnels[i], endpointFrames)
					} else {
						t.Logf("%v: %v", tunnels[i], err)
					}
				}
				summary = append(summary, fmt.Sprintf("%-45s %-8s %d of %d", c.name, setup, up, len(tunnels)))
				want := len(tunnels)
				if !withALG {
					want = c.baseline
				}
				if up != want {
					t.Errorf("%d of %d tunnels up, want %d", up, len(tunnels), want)
				}
				if withALG && up == len(tunnels) {
					t.Logf("mapping table:\n%s", r.table(t))
				}
				if withALG && len(c.doctor) > 0 {
					out, _ := r.cli(t, "doctor")
					for _, want := range c.doctor {
						if !strings.Contains(out, "\n"+want) && !strings.HasPrefix(out, want) {
							t.Errorf("pptp-alg doctor lacks %q:\n%s", want, out)
						}
					}
				}
			})
		}
	}
	t.Logf("tunnels up, each case on the same fw4 router without and with pptp-alg:\n%s", strings.Join(summary, "\n"))
}

// TestEndpointsCallIDCollision: the router's own client and a LAN client
// choose the same call ID toward the same server; both carry data. The LAN
// side is the simulator, which can choose its call ID: the router's, read
// from the mapping table.
func TestEndpointsCallIDCollision(t *testing.T) {
	r := newRouterWith(t, lab.Options{Hosts: 1, Firewall: lab.FirewallFW4}, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.StartPPTPD(ctx); err != nil {
		t.Fatal(err)
	}
	own, err := r.StartPPTPClient(r.RouterHost())
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	if _, err := own.WaitUp(ctx); err != nil {
		t.Fatalf("router's own tunnel: %v", err)
	}
	var ownCall int
	for _, m := range r.mappings(t) {
		if m.Client == r.WANAddr.String() {
			ownCall = m.ClientCallID
		}
	}
	if ownCall == 0 {
		t.Fatalf("the router's own call is not in the mapping table:\n%s", r.table(t))
	}
	// The LAN client takes the router's call ID, and holds its call while
	// both tunnels carry data.
	hs := r.holdSim(t, r.Hosts[0], "--call-ids", fmt.Sprint(ownCall), "--pings", "5")
	t.Logf("both calls up, the LAN client with the router's call ID %d:\n%s", ownCall, r.table(t))
	nat := map[int]string{}
	for _, m := range r.mappings(t) {
		if m.ClientCallID != ownCall {
			t.Errorf("mapping %+v: want client call ID %d", m, ownCall)
		}
		if prev, dup := nat[m.NATCallID]; dup {
			t.Errorf("NAT call ID %d given to %s and %s", m.NATCallID, prev, m.Client)
		}
		nat[m.NATCallID] = m.Client
	}
	if len(nat) != 2 {
		t.Fatalf("want 2 calls with distinct NAT call IDs, got %v", nat)
	}
	if n, err := own.Echo(ctx, endpointFrames); err != nil || n != endpointFrames {
		t.Errorf("router's own tunnel: %d of %d frames came back: %v", n, endpointFrames, err)
	}
	if sent, echoed := hs.pingRound(t); sent != 5 || echoed != sent {
		t.Errorf("LAN client: %d of %d pings came back", echoed, sent)
	}
	if n, err := own.Echo(ctx, endpointFrames); err != nil || n != endpointFrames {
		t.Errorf("router's own tunnel, after the LAN's pings: %d of %d frames came back: %v", n, endpointFrames, err)
	}
	hs.release(t)
	for _, c := range events(jsonLines(hs.p.Output()), "call") {
		if c["peer_call_id_ok"] != true || c["sent"] != c["echoed"] {
			t.Errorf("LAN client: call %v", c)
		}
	}
	for _, d := range events(jsonLines(hs.p.Output()), "done") {
		if d["ok"] != true {
			t.Errorf("LAN client: %v", d)
		}
	}
	own.Close()
	r.waitEmpty(t, "both hung up")
	// The calls' marks in gre_calls went with them.
	if out := r.nft(t, "list", "set", "ip", "pptp_alg", "gre_calls"); strings.Contains(out, "elements") {
		t.Errorf("gre_calls keeps elements after every call ended:\n%s", out)
	}
}

// TestEndpointsForgedGRE sends GRE with unknown keys from the WAN to the
// WAN address, to a LAN host with a relayed tunnel and to the
// port-forwarded server while those tunnels run, and compares where it
// lands with the same router without pptp-alg.
func TestEndpointsForgedGRE(t *testing.T) {
	const perTarget = 300
	type landed struct{ client, nas, other, router int }
	results := map[bool]landed{}
	for _, withALG := range []bool{false, true} {
		setup := map[bool]string{false: "no ALG", true: "pptp-alg"}[withALG]
		t.Run(setup, func(t *testing.T) {
			nas := lab.HostAddr(2)
			r := newRouterWith(t, lab.Options{Hosts: 3, Firewall: lab.FirewallFW4, Redirects: portForward(nas),
				WANInput: []fw4.Rule{allowGRE}}, withALG)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := r.StartPPTPD(ctx); err != nil {
				t.Fatal(err)
			}
			if err := r.StartPPTPDOn(ctx, r.Hosts[1].NS, nas); err != nil {
				t.Fatal(err)
			}
			// The relayed LAN tunnel (h1) and the router's own, then the
			// port forward's from the WAN.
			tunnels := []tunnel{{r.Hosts[0], r.ServerAddr}, {r.RouterHost(), r.ServerAddr}, {wanHost(r.Lab), r.WANAddr}}
			errs := r.runTunnels(t, tunnels)
			for i, err := range errs {
				t.Logf("%v: %v", tunnels[i], errOrUp(err))
			}
			var live map[int]bool
			if withALG {
				live = map[int]bool{}
				for _, m := range r.mappings(t) {
					live[m.NATCallID] = true
				}
			}
			client, nasCap, other, local := r.captureGRE(t, r.Hosts[0].NS), r.captureGRE(t, r.Hosts[1].NS),
				r.captureGRE(t, r.Hosts[2].NS), r.captureGRE(t, r.Router)
			wire := r.captureWire(t, r.Router, lab.RouterWAN)
			if _, err := r.Run(ctx, r.Server, "ip", "route", "add", r.LANPrefix.String(), "via", r.WANAddr.String()); err != nil {
				t.Fatal(err)
			}
			forged := netip.MustParseAddr("198.51.100.66")
			var pkts [][]byte
			for _, dst := range []netip.Addr{r.WANAddr, r.Hosts[0].Addr, nas} {
				for i := range perTarget {
					key := uint16(0xa000 + i)
					if live[int(key)] {
						t.Fatalf("key %#x is a live NAT call ID: pick others", key)
					}
					src := r.ServerAddr
					if i%2 == 1 {
						src = forged
					}
					pkts = append(pkts, forgeGRE(src, dst, key, uint32(i)))
				}
			}
			r.sendRaw(t, r.Server, pkts)
			settle(client, nasCap, other, local, wire)
			got := landed{client.count(), nasCap.count(), other.count(), local.count()}
			t.Logf("%d forged packets (wan saw %d): relayed LAN client %d, port-forwarded server %d, other LAN host %d, router %d",
				len(pkts), wire.count(), got.client, got.nas, got.other, got.router)
			if wire.count() < len(pkts)*9/10 {
				t.Errorf("only %d of %d forged packets reached the router: the test proves nothing", wire.count(), len(pkts))
			}
			if got.client != 0 || got.other != 0 {
				t.Errorf("forged GRE reached LAN hosts that are not the port forward's: %+v", got)
			}
			results[withALG] = got
		})
	}
	// Where it lands is the same: the port forward takes what was sent to
	// the WAN address (a raw socket may drop a few of a burst), nothing
	// reaches the router's stack or another host.
	base, alg := results[false], results[true]
	for _, got := range []landed{base, alg} {
		if got.nas < perTarget*9/10 || got.nas > perTarget || got.router != 0 {
			t.Errorf("forged GRE lands differently: without pptp-alg %+v, with it %+v; want the %d sent to the WAN address at the port-forwarded server, and no more",
				base, alg, perTarget)
			break
		}
	}
}

func errOrUp(err error) error {
	if err == nil {
		return errors.New("up")
	}
	return err
}

// TestEndpointsCallIDCollisionRouterSide turns the collision round: the
// LAN's real pptp-linux calls first, and the router's side, the simulator,
// takes the LAN call's ID. Relayed (the default), both carry data. With
// --router-calls=false the router's call goes direct and collides with the
// LAN call's NAT call ID: its GRE goes to the LAN client. That is the
// failure the relaying prevents, and shows this test can fail.
func TestEndpointsCallIDCollisionRouterSide(t *testing.T) {
	for _, relayed := range []bool{true, false} {
		t.Run(fmt.Sprintf("router calls relayed %v", relayed), func(t *testing.T) {
			r := newRouterWith(t, lab.Options{Hosts: 1, Firewall: lab.FirewallFW4, WANInput: []fw4.Rule{allowGRE}}, true,
				fmt.Sprintf("--router-calls=%v", relayed))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := r.StartPPTPD(ctx); err != nil {
				t.Fatal(err)
			}
			lan, err := r.StartPPTPClient(r.Hosts[0])
			if err != nil {
				t.Fatal(err)
			}
			defer lan.Close()
			if _, err := lan.WaitUp(ctx); err != nil {
				t.Fatalf("LAN tunnel: %v", err)
			}
			ms := r.mappings(t)
			if len(ms) != 1 || ms[0].NATCallID != ms[0].ClientCallID {
				t.Fatalf("want the LAN call alone, keeping its own call ID: %+v", ms)
			}
			id := ms[0].ClientCallID
			own := r.holdSim(t, r.RouterHost(), "--call-ids", fmt.Sprint(id), "--pings", "5", "--wait", "1s")
			t.Logf("the router's call takes the LAN call's ID %d:\n%s", id, r.table(t))
			sent, echoed := own.pingRound(t)
			ectx, ecancel := context.WithTimeout(ctx, 5*time.Second)
			n, lanErr := lan.Echo(ectx, endpointFrames)
			ecancel()
			t.Logf("router's call: %d of %d pings came back; LAN tunnel: %d of %d frames (%v)", echoed, sent, n, endpointFrames, lanErr)
			if relayed {
				if sent != 5 || echoed != sent {
					t.Errorf("relayed, the router's call got %d of %d pings back", echoed, sent)
				}
				if lanErr != nil || n != endpointFrames {
					t.Errorf("LAN tunnel: %d of %d frames came back: %v", n, endpointFrames, lanErr)
				}
			} else if echoed != 0 {
				// The LAN tunnel may suffer too: it receives the
				// router's echoes.
				t.Errorf("not relayed, the router's call got %d of %d pings back through a colliding NAT call ID; want none", echoed, sent)
			}
		})
	}
}
