package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The fast path is a second table, of family netdev and the same name, with
// an ingress chain on the WAN and on each LAN. It takes the GRE of calls it
// has elements for, rewrites it as the ip table would, and sends it straight
// out of the other side with nft's fwd: no routing lookup, no IP-family
// hooks (fw4's chains, conntrack), no notrack. That is what makes pptp-alg
// forward GRE faster than the kernel helper.
//
// It is only an accelerator. It leaves to the ip table whatever it is not
// sure of: fragments, a TTL that would expire, a packet larger than the out
// interface's MTU, calls whose route leaves by another interface, and all
// GRE while it is being rebuilt or if it cannot be installed. The ip table
// keeps every call's elements either way.
//
// What it learnt at install (interface indexes and MTUs, the routes) goes
// stale when they change; CheckFastPath notices and rebuilds it.

// Names inside the netdev table.
const (
	chainWANIngress = "wan_ingress"
	chainLANIngress = "lan_ingress_" // + the interface name
)

// Registers beyond ruleset.go's: what fwd reads.
const (
	reg11 = unix.NFT_REG32_03
	reg12 = unix.NFT_REG32_04
)

// ipFragMask covers the IPv4 more-fragments flag and fragment offset.
const ipFragMask = 0x3fff

// lan_oif maps a LAN client to the interface it is reached by; idLANOIF
// names it within its batch.
const (
	mapLANOIF = "lan_oif"
	idLANOIF  = 5
)

// fastObjects are the netdev table's sets and chains.
type fastObjects struct {
	table                 *nftables.Table
	greIn, greOut, lanOIF *nftables.Set
	wanIn                 *nftables.Chain
	lanIn                 []*nftables.Chain
}

func newFastObjects(cfg Config) fastObjects {
	t := &nftables.Table{Family: nftables.TableFamilyNetdev, Name: cfg.Table}
	o := fastObjects{
		table: t,
		// map gre_in { type ipv4_addr . inet_service : ipv4_addr . inet_service; counter; }, as in the ip table
		greIn: &nftables.Set{Table: t, ID: idGREIn, Name: mapGREIn, IsMap: true, KeyType: typeServerCall, DataType: typeServerCall, Counter: true},
		// map lan_oif { type ipv4_addr : iface_index; }
		lanOIF: &nftables.Set{Table: t, ID: idLANOIF, Name: mapLANOIF, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIFIndex},
		// map gre_out { type ipv4_addr . ipv4_addr . inet_service : ipv4_addr; counter; }
		greOut: &nftables.Set{Table: t, ID: idGREOut, Name: setGREOut, IsMap: true, KeyType: typeOutCall, DataType: nftables.TypeIPAddr, Counter: true},
		// chain wan_ingress { type filter hook ingress device WAN priority filter; policy accept; }
		wanIn: ingressChain(t, chainWANIngress, cfg.WAN),
	}
	for _, n := range cfg.LAN {
		o.lanIn = append(o.lanIn, ingressChain(t, chainLANIngress+n, n))
	}
	return o
}

func ingressChain(t *nftables.Table, name, dev string) *nftables.Chain {
	return &nftables.Chain{
		Table: t, Name: name, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookIngress,
		Priority: nftables.ChainPriorityFilter, Policy: policyAccept, Device: dev,
	}
}

// fastLinks is what the fast path was built for; when any of it changes,
// it is built again.
type fastLinks struct {
	wan link
	// The LAN interfaces that exist, by name: a LAN may be absent (a
	// bridge that is down) and come back; its GRE takes the ip table
	// meanwhile, which matches interfaces by name.
	lan      []link
	lanNames []string
	wanAddr  netip.Addr
	routes   uint64 // routesDigest
}

func (a fastLinks) equal(b fastLinks) bool {
	return a.wan == b.wan && slices.Equal(a.lan, b.lan) && slices.Equal(a.lanNames, b.lanNames) &&
		a.wanAddr == b.wanAddr && a.routes == b.routes
}

// fastPath is the netdev table as the Plane keeps it: its objects, what it
// was built for and which elements it holds. It shares the Plane's mutex,
// mu, and socket (send): a call's elements in both tables change together,
// in one batch, and a table the socket owns takes changes from it alone.
// Methods that say so are called with mu held.
type fastPath struct {
	mu    *sync.Mutex // the Plane's
	cfg   Config
	netns int // an fd; 0 for our own
	// send sends a batch on the Plane's socket. mu is held.
	send func([]netlink.Message) error

	obj    fastObjects
	on     bool      // installed and in use
	err    error     // why not, if not
	links  fastLinks // what it was (or failed to be) built for
	dirty  bool      // an element batch failed: rebuild at the next check
	refill bool      // built since the caller last added its calls
	routes map[netip.Addr]route

	// present holds what the fast path's sets hold, so that a deletion
	// asks for no element that is not there: a batch the kernel refuses
	// costs it 15 to 30 ms here, with mu held.
	present map[fastKey]struct{}
}

// newFastPath is the fast path of cfg, not installed. mu is the Plane's,
// netns its network namespace; send sends on its socket.
func newFastPath(cfg Config, mu *sync.Mutex, netns int, send func([]netlink.Message) error) *fastPath {
	return &fastPath{mu: mu, cfg: cfg, netns: netns, send: send, obj: newFastObjects(cfg),
		present: map[fastKey]struct{}{}}
}

// fastKey names an element of gre_in or gre_out: the set's batch ID, then
// the key. Fixed size, so that 10,000 calls' worth costs little memory.
type fastKey [1 + 12]byte

func keyOf(s *nftables.Set, key []byte) fastKey {
	var k fastKey
	k[0] = byte(s.ID)
	copy(k[1:], key)
	return k
}

// deletion is what a deletion of key from the ip table's counterpart of s
// must delete from the fast path: nothing if the fast path is off or never
// had the element; else the element. mu is held.
func (f *fastPath) deletion(s *nftables.Set, key []byte) *nftables.SetElement {
	if !f.on {
		return nil
	}
	k := keyOf(s, key)
	if _, ok := f.present[k]; !ok {
		return nil // never added: the call's route did not suit the fast path
	}
	delete(f.present, k)
	return &nftables.SetElement{Key: key}
}

// queueAdditions queues on b, after the ip table's elements of the same
// batch, the fast path's elements of the additions that were queued: one
// message per set. It returns their keys, for added once the batch went
// in; nil if it queued none. mu is held.
func (f *fastPath) queueAdditions(b *elementBatch, as []*addition) ([]fastKey, error) {
	if !f.on {
		return nil, nil
	}
	var in, out, oifs []nftables.SetElement
	var keys []fastKey
	seen := map[[4]byte]bool{} // lan_oif entries, one per client
	for _, a := range as {
		if !a.queued {
			continue
		}
		if a.Outbound {
			if el := f.outElement(a.Client, a.Server, a.ServerID); el != nil {
				out = append(out, *el)
				keys = append(keys, keyOf(f.obj.greOut, el.Key))
			}
			continue
		}
		el, oif := f.inElements(a.Server, a.NATID, a.Client, a.ClientID)
		if el == nil {
			continue
		}
		in = append(in, *el)
		keys = append(keys, keyOf(f.obj.greIn, el.Key))
		if k := [4]byte(oif.Key); !seen[k] {
			seen[k] = true
			oifs = append(oifs, *oif)
		}
	}
	for _, q := range []struct {
		s   *nftables.Set
		els []nftables.SetElement
	}{{f.obj.lanOIF, oifs}, {f.obj.greIn, in}, {f.obj.greOut, out}} {
		if len(q.els) == 0 {
			continue
		}
		if err := b.queue(true, q.s, q.els); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// added records that the elements of keys went in. mu is held.
func (f *fastPath) added(keys []fastKey) {
	for _, k := range keys {
		f.present[k] = struct{}{}
	}
}

// readLinks reads what the fast path depends on, now. It needs no lock:
// the interface names never change.
func (f *fastPath) readLinks(wanAddr netip.Addr) (fastLinks, error) {
	var l fastLinks
	var err error
	if l.wan, err = lookupLink(f.netns, f.cfg.WAN); err != nil {
		return l, fmt.Errorf("WAN %s: %w", f.cfg.WAN, err)
	}
	for _, n := range f.cfg.LAN {
		ln, err := lookupLink(f.netns, n)
		if errors.Is(err, unix.ENODEV) {
			continue // absent for now
		}
		if err != nil {
			return l, fmt.Errorf("LAN %s: %w", n, err)
		}
		l.lan = append(l.lan, ln)
		l.lanNames = append(l.lanNames, n)
	}
	if len(l.lan) == 0 {
		return l, errNoLAN
	}
	l.wanAddr = wanAddr
	if l.routes, err = routesDigest(f.netns); err != nil {
		return l, fmt.Errorf("routes: %w", err)
	}
	return l, nil
}

// install replaces the netdev table with an empty fast path built for what
// readLinks sees now, outbound GRE leaving from wanAddr. On failure the fast
// path is off and its table deleted: one built for older links would
// forward by them. mu is held.
func (f *fastPath) install(wanAddr netip.Addr) error {
	o := f.obj
	f.on, f.dirty, f.refill, f.routes = false, false, true, map[netip.Addr]route{}
	// The caller adds its calls again. No addition is in flight: a batch
	// holds mu while it is on its way, so none lands in the new table made
	// for the old links, where no deletion would know of it.
	clear(f.present)
	links, err := f.readLinks(wanAddr)
	f.links = links
	var msgs []netlink.Message
	if err == nil {
		msgs, err = o.installBatch(links, f.cfg.Owner)
	}
	if err == nil {
		err = f.send(msgs)
	}
	if err != nil {
		_ = f.deleteTable()
		f.err = err
		return err
	}
	f.on, f.err = true, nil
	return nil
}

// installBatch is the one transaction that installs the fast path for
// links, replacing any table of the same name; with owner, the new table is
// owned by the socket that sends it (ownTables).
func (o fastObjects) installBatch(links fastLinks, owner bool) ([]netlink.Message, error) {
	msgs, err := recordBatch(func(c *nftables.Conn) error {
		c.AddTable(o.table) // add table netdev pptp_alg
		c.DelTable(o.table) // delete table netdev pptp_alg
		c.AddTable(o.table)
		if err := c.AddSet(o.greIn, nil); err != nil {
			return err
		}
		if err := c.AddSet(o.greOut, nil); err != nil {
			return err
		}
		if err := c.AddSet(o.lanOIF, nil); err != nil {
			return err
		}
		c.AddChain(o.wanIn)
		for _, ch := range o.lanIn {
			if slices.Contains(links.lanNames, ch.Device) {
				c.AddChain(ch)
			}
		}
		return nil
	})
	if err == nil && owner {
		err = ownTables(msgs, o.table)
	}
	if err != nil {
		return nil, err
	}
	lanMTU := links.lan[0].MTU
	for _, l := range links.lan {
		lanMTU = min(lanMTU, l.MTU)
	}
	r, err := ruleMsg(o.wanIn, o.inboundExprs(lanMTU), fwdNeigh{addr: reg10, dev: reg11})
	if err != nil {
		return nil, err
	}
	msgs = append(msgs, r)
	// Without a WAN address the ip table drops outbound PPTP GRE; so does
	// the fast path, by leaving it to the ip table.
	if links.wanAddr.IsValid() {
		for _, ch := range o.lanIn {
			if !slices.Contains(links.lanNames, ch.Device) {
				continue
			}
			r, err := ruleMsg(ch, o.outboundExprs(links.wanAddr, links.wan), fwdNeigh{addr: reg11, dev: reg12})
			if err != nil {
				return nil, err
			}
			msgs = append(msgs, r)
		}
	}
	return msgs, nil
}

// deleteTable deletes the netdev table; one that is gone is not an error.
// mu is held.
func (f *fastPath) deleteTable() error {
	msgs, err := recordBatch(func(c *nftables.Conn) error {
		c.DelTable(f.obj.table)
		return nil
	})
	if err != nil {
		return err
	}
	if err := f.send(msgs); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// matchFastGRE matches what the fast path may take: an IPv4 packet of
// PPTP's GRE, not a fragment, whose TTL survives the hop, and that fits the
// out interface's MTU.
//
//	meta protocol ip ip protocol gre @th,0,32 & 0x2007ffff == 0x2001880b
//	ip frag-off & 0x3fff == 0 ip ttl > 1 ip length <= MTU
func matchFastGRE(mtu int) []expr.Any {
	return concat(
		[]expr.Any{
			// [ meta load protocol => reg 1 ]   netdev sees every ethertype
			&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: unix.NFT_REG_1},
			// [ cmp eq reg 1 0x0800 ]
			&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: be16(unix.ETH_P_IP)},
		},
		matchPPTPGRE(),
		[]expr.Any{
			// [ payload load 2b @ network header + 6 => reg 1 ]
			&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
			// [ bitwise reg 1 = ( reg 1 & 0x3fff ) ^ 0 ]
			&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 2, Mask: be16(ipFragMask), Xor: be16(0)},
			// [ cmp eq reg 1 0 ]
			&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: be16(0)},
			// [ payload load 1b @ network header + 8 => reg 1 ]
			&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 1},
			// [ cmp gt reg 1 1 ]
			&expr.Cmp{Op: expr.CmpOpGt, Register: unix.NFT_REG_1, Data: []byte{1}},
			// [ payload load 2b @ network header + 2 => reg 1 ]
			&expr.Payload{DestRegister: unix.NFT_REG_1, Base: expr.PayloadBaseNetworkHeader, Offset: 2, Len: 2},
			// [ cmp lte reg 1 MTU ]
			&expr.Cmp{Op: expr.CmpOpLte, Register: unix.NFT_REG_1, Data: be16(uint16(min(mtu, 0xffff)))},
		},
	)
}

// inboundExprs: GRE from a server, for a call with an element, to its
// client. Every register the rule reads is loaded whole by one expression,
// so that nft can print the rule back.
//
//	<fast gre, LAN MTU> ip daddr . @th,48,16 set ip saddr . @th,48,16 map @gre_in
//	fwd ip to ip daddr device ip daddr map @lan_oif
func (o fastObjects) inboundExprs(lanMTU int) []expr.Any {
	return concat(
		matchFastGRE(lanMTU),
		greInRewrite(o.greIn),
		[]expr.Any{
			// [ payload load 4b @ network header + 16 => reg 10 ]  ip daddr, the client: the neighbour
			&expr.Payload{DestRegister: reg10, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			// [ lookup reg 10 set lan_oif dreg 11 ]
			&expr.Lookup{SourceRegister: reg10, DestRegister: reg11, IsDestRegSet: true, SetName: o.lanOIF.Name, SetID: o.lanOIF.ID},
		},
	)
}

// outboundExprs: GRE from a LAN host, for a call of its own, to the server.
//
//	<fast gre, WAN MTU> ip saddr . ip daddr . @th,48,16 map @gre_out => <neighbour>
//	ip saddr set WANADDR fwd ip to <neighbour> device WAN
func (o fastObjects) outboundExprs(wanAddr netip.Addr, wan link) []expr.Any {
	a := wanAddr.As4()
	return concat(
		matchFastGRE(wan.MTU),
		loadGREOutKey(),
		[]expr.Any{
			// [ lookup reg 8 set gre_out dreg 11 ]   neighbour
			&expr.Lookup{SourceRegister: reg8, DestRegister: reg11, IsDestRegSet: true, SetName: o.greOut.Name, SetID: o.greOut.ID},
			// [ immediate reg 8 WANADDR ]
			&expr.Immediate{Register: reg8, Data: a[:]},
			// [ payload write reg 8 => 4b @ network header + 12 csum_type 1 csum_off 10 ]
			&expr.Payload{OperationType: expr.PayloadWrite, SourceRegister: reg8, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4,
				CsumType: expr.CsumTypeInet, CsumOffset: 10},
			// [ immediate reg 12 WANINDEX ]
			&expr.Immediate{Register: reg12, Data: binary.NativeEndian.AppendUint32(nil, uint32(wan.Index))},
		},
	)
}

// routeTo returns the route to dst, asking the kernel once per address
// until the fast path is next built. No route is remembered too, as the
// zero route, which suits neither side. mu is held.
func (f *fastPath) routeTo(dst netip.Addr) route {
	r, ok := f.routes[dst]
	if !ok {
		r, _ = lookupRoute(f.netns, dst)
		f.routes[dst] = r
	}
	return r
}

// inElements are the fast path's gre_in element for a call and the lan_oif
// element of its client, or nil if the fast path is off or the client is
// not on a LAN's own network (the fast path sends to the client itself, not
// through a gateway). mu is held.
func (f *fastPath) inElements(server netip.Addr, natID uint16, client netip.Addr, clientID uint16) (in, oif *nftables.SetElement) {
	if !f.on {
		return nil, nil
	}
	r := f.routeTo(client)
	if r.Via != client || !slices.ContainsFunc(f.links.lan, func(l link) bool { return l.Index == r.OIF }) {
		return nil, nil
	}
	c := client.As4()
	return &nftables.SetElement{Key: inKey(server, natID), Val: inValue(client, clientID)},
		&nftables.SetElement{Key: c[:], Val: binary.NativeEndian.AppendUint32(nil, uint32(r.OIF))} // iface_index is host order
}

// outElement is the fast path's gre_out element for a call, or nil if the
// fast path is off, the server is not reached through the WAN, or the
// client is not reached through a LAN. The router's own calls stay off it
// (a local address has no unicast route): their GRE never enters a LAN
// ingress, and a LAN host forging the router's address must meet the
// routing's martian-source check, which fwd would skip. mu is held.
func (f *fastPath) outElement(client, server netip.Addr, serverID uint16) *nftables.SetElement {
	if !f.on || !f.links.wanAddr.IsValid() {
		return nil
	}
	if c := f.routeTo(client); !slices.ContainsFunc(f.links.lan, func(l link) bool { return l.Index == c.OIF }) {
		return nil
	}
	r := f.routeTo(server)
	if r.OIF == 0 || r.OIF != f.links.wan.Index {
		return nil
	}
	via := r.Via.As4()
	return &nftables.SetElement{Key: outKey(client, server, serverID), Val: via[:]}
}

// CheckFastPath rebuilds the fast path, empty, if what it was built for has
// changed (interfaces, MTUs, routes, the WAN address), if an element batch
// failed, or if the table is gone; it reports whether it did, so that the
// caller adds its calls again (AddInbound and AddOutbound fill both tables;
// the ip table's elements already there are left as they are). A fast path
// that could not be installed is tried again only when something changes.
// Without Config.FastPath it does nothing.
func (p *Plane) CheckFastPath() (rebuilt bool, err error) {
	if !p.cfg.FastPath {
		return false, nil
	}
	f := p.fast
	p.mu.Lock()
	if f.refill {
		f.refill = false
		p.mu.Unlock()
		return true, nil
	}
	wanAddr := p.cfg.WANAddr
	p.mu.Unlock()
	// Read without the lock: calls are set up meanwhile.
	links, err := f.readLinks(wanAddr)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil && !f.on && f.err != nil && f.err.Error() == err.Error() {
		return false, nil // failed the same way already
	}
	if err == nil && links.equal(f.links) && !f.dirty {
		if !f.on {
			return false, nil // failed for these links already
		}
		_, lerr := p.conn.ListTableOfFamily(p.cfg.Table, nftables.TableFamilyNetdev)
		if lerr = p.settle(lerr); lerr == nil {
			return false, nil
		} else if !errors.Is(lerr, unix.ENOENT) {
			return false, fmt.Errorf("nat: list table netdev %s: %w", p.cfg.Table, lerr)
		}
	}
	err = f.install(p.cfg.WANAddr)
	f.refill = false
	if err != nil {
		return false, fmt.Errorf("nat: fast path: %w", err)
	}
	return true, nil
}

// errNoLAN is why the fast path is off while no LAN interface exists.
var errNoLAN = errors.New("no LAN interface exists")

// FastPathStale reports whether CheckFastPath has work to do that no
// change of links or ruleset announces: an element batch failed, or the
// caller has yet to add its calls to a rebuilt fast path.
func (p *Plane) FastPathStale() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.FastPath && (p.fast.dirty || p.fast.refill)
}

// ErrFastPathOff is why FastPath is off without Config.FastPath.
var ErrFastPathOff = errors.New("turned off")

// FastPath reports whether the fast path is in use and, if not, why.
func (p *Plane) FastPath() (on bool, why error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cfg.FastPath {
		return false, ErrFastPathOff
	}
	return p.fast.on, p.fast.err
}
