package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// DefaultTable is the table name used when Config.Table is empty.
const DefaultTable = "pptp_alg"

// Config describes the router the table is built for.
type Config struct {
	Table     string     // default "pptp_alg"
	LAN       []string   // LAN interface names
	WAN       string     // WAN interface name
	WANAddr   netip.Addr // source address for outbound GRE
	RelayPort uint16
	// RouterCalls also redirects the router's own PPTP control
	// connections out of the WAN to the relay, all but those whose socket
	// carries RelayMark (the relay's own), so that the router's calls and
	// the LAN's share one call-ID space toward each server.
	RouterCalls bool
	RelayMark   uint32
	// Unless Redirect, LAN control connections reach the relay by tproxy:
	// relay_prerouting hands each packet to the relay's socket and sets
	// TProxyMark (within TProxyMask) on it, and a policy rule at
	// RulePriority sends packets with that mark to RouteTable, which
	// delivers everything locally (tproxyroute.go). Zero means the Default of each; a zero mask is the
	// mark itself.
	TProxyMark, TProxyMask   uint32
	RouteTable, RulePriority uint32
	// Redirect takes new LAN control connections to the relay by a NAT
	// redirect instead (chain relay_redirect): no policy rule, so the
	// kernel's route lookup of every forwarded packet stays fast, but
	// without Owner a `nft flush ruleset` resets busy ones. Also for LAN
	// bridges whose frames pass the IP hooks (bridge-nf-call-iptables=1),
	// where tproxy's socket is lost. See SetRedirect.
	Redirect bool
	// FastPath also installs the netdev table that forwards the GRE of
	// known calls from ingress (see CheckFastPath). If it cannot be
	// installed, the ip table carries all GRE and FastPath says why.
	FastPath bool
	// Owner creates both tables owned by the Plane's socket (the kernel's
	// table flag owner, Linux 5.12; Probe's "table owner"): `nft flush
	// ruleset` leaves them, and with them the NAT hooks that established
	// redirected connections need; no one else can change or delete them;
	// they go when the socket closes, at Close or when the process dies
	// (and see Lost).
	Owner bool
}

// check validates c and fills in defaults.
func (c Config) check() (Config, error) {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if len(c.Table) >= 256 { // NFT_TABLE_MAXNAMELEN, with its NUL
		return c, fmt.Errorf("table name %q too long", c.Table)
	}
	if err := checkIfname(c.WAN); err != nil {
		return c, fmt.Errorf("WAN: %w", err)
	}
	if len(c.LAN) == 0 {
		return c, errors.New("no LAN interface")
	}
	c.LAN = append([]string(nil), c.LAN...)
	for _, n := range c.LAN {
		if err := checkIfname(n); err != nil {
			return c, fmt.Errorf("LAN: %w", err)
		}
		if n == c.WAN {
			return c, fmt.Errorf("interface %q is both LAN and WAN", n)
		}
	}
	if c.WANAddr.IsValid() {
		a, err := ipv4(c.WANAddr)
		if err != nil {
			return c, fmt.Errorf("WAN address: %w", err)
		}
		c.WANAddr = a
	}
	if c.RelayPort == 0 {
		return c, errors.New("no relay port")
	}
	if c.RouterCalls && c.RelayMark == 0 {
		return c, errors.New("router calls relayed without a relay mark")
	}
	if c.TProxyMark == 0 {
		c.TProxyMark = DefaultTProxyMark
	}
	if c.TProxyMask == 0 {
		c.TProxyMask = c.TProxyMark
	}
	if c.RouteTable == 0 {
		c.RouteTable = DefaultRouteTable
	}
	if c.RulePriority == 0 {
		c.RulePriority = DefaultRulePriority
	}
	switch {
	case c.TProxyMark&^c.TProxyMask != 0:
		return c, fmt.Errorf("tproxy mark %#x has bits outside its mask %#x", c.TProxyMark, c.TProxyMask)
	case c.RelayMark&c.TProxyMask == c.TProxyMark:
		// The relay's connections to servers would be routed to itself.
		return c, fmt.Errorf("relay mark %#x matches the tproxy mark %#x/%#x", c.RelayMark, c.TProxyMark, c.TProxyMask)
	case c.RouteTable >= unix.RT_TABLE_COMPAT && c.RouteTable <= unix.RT_TABLE_LOCAL:
		return c, fmt.Errorf("routing table %d is one of the kernel's own (252-255)", c.RouteTable)
	case c.RulePriority >= 32766:
		return c, fmt.Errorf("rule priority %d does not come before the main table's rule (32766)", c.RulePriority)
	}
	return c, nil
}

func checkIfname(n string) error {
	if n == "" || len(n) >= unix.IFNAMSIZ {
		return fmt.Errorf("bad interface name %q", n)
	}
	return nil
}

// errNotIPv4 reports an address the IPv4 table cannot hold.
var errNotIPv4 = errors.New("not an IPv4 address")

// ipv4 returns a as a plain IPv4 address, unmapping ::ffff:a.b.c.d.
func ipv4(a netip.Addr) (netip.Addr, error) {
	a = a.Unmap()
	if !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%v: %w", a, errNotIPv4)
	}
	return a, nil
}

// Plane is the installed table. It is safe for concurrent use: one mutex
// orders every batch and dump on its sockets.
//
// Each Delete is one netlink batch; Adds made at the same moment share one
// (group.go), each still answered alone. Errors from the kernel keep their
// errno, so errors.Is(err, unix.ENOENT) after an Add means the table is gone
// (for example after `nft flush ruleset`; see Installed and Reinstall).
//
// A Plane keeps one netlink socket open until Close. Closing a
// NETLINK_NETFILTER socket makes the kernel wait for nf_tables' deferred
// destruction work, which after an element deletion includes an RCU grace
// period: with a socket per batch, one add and one delete took about 14 ms
// here, where on one lasting socket a call's whole set-up and tear-down (four
// batches) takes about 70 µs. Counters opens a second socket, for its own
// dumps, and keeps it too.
type Plane struct {
	mu   sync.Mutex
	adds additions             // waiting for a batch (group.go)
	opts []nftables.ConnOption // to open the socket again after a fault
	conn *nftConn
	lost chan struct{} // see Lost
	// elements is the element batch that queue fills and sendQueued
	// sends on conn's socket.
	elements elementBatch
	cfg      Config
	obj      objects
	dump     dumper // for Counters
	fast     *fastPath
	// route delivers tproxied control connections locally. Not nftables,
	// so a flush of the ruleset leaves it.
	route routing
}

// Open deletes any table of the same name left by an earlier run, then
// installs the table for cfg, all in one batch. A table that another live
// socket owns cannot be replaced (EPERM). opts go to nftables.New
// (nftables.WithNetNSFd to work in another network namespace, whose fd must
// stay open while the Plane is used: sockets are opened there again after a
// fault); Open adds nftables.AsLasting itself.
//
// An invalid cfg.WANAddr (the WAN has no address yet) installs a rule that
// drops outbound PPTP GRE until SetWANAddr gives one.
func Open(cfg Config, opts ...nftables.ConnOption) (*Plane, error) {
	cfg, err := cfg.check()
	if err != nil {
		return nil, fmt.Errorf("nat: open: %w", err)
	}
	opts = slices.Clip(opts)
	conn, err := dialNFT(opts)
	if err != nil {
		return nil, fmt.Errorf("nat: open: %w", err)
	}
	p := &Plane{opts: opts, conn: conn, lost: make(chan struct{}, 1), cfg: cfg, obj: newObjects(cfg),
		dump: dumper{netns: conn.NetNS}, route: openRouting(conn.NetNS, cfg)}
	p.fast = newFastPath(cfg, &p.mu, conn.NetNS, p.sendBatch)
	// The route first: tproxied packets are marked from the moment the
	// table is in. The redirect needs none, and an earlier tproxy run's
	// goes: with no policy rule, the kernel keeps its fast route lookup
	// for every forwarded packet.
	if err = p.route.remove(); err == nil && !cfg.Redirect {
		_, err = p.route.ensure()
	}
	if err != nil {
		_ = p.conn.CloseLasting()
		return nil, fmt.Errorf("nat: open: %w", err)
	}
	if err := p.install(); err != nil {
		_ = p.route.remove()
		_ = p.conn.CloseLasting()
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w (owned by another process?)", err)
		}
		return nil, fmt.Errorf("nat: open table ip %s: %w", cfg.Table, err)
	}
	p.fast.refill = false // nothing to add yet
	return p, nil
}

// install installs the ip table and, if configured, the fast path. A fast
// path that fails is left off (FastPath says why); the ip table does not
// need it.
func (p *Plane) install() error {
	msgs, err := recordBatch(func(c *nftables.Conn) error { return p.obj.queueInstall(c, p.cfg) })
	if err == nil && p.cfg.Owner {
		err = ownTables(msgs, p.obj.table)
	}
	if err != nil {
		return err
	}
	if err := p.sendBatch(msgs); err != nil {
		return err
	}
	if p.cfg.FastPath {
		_ = p.fast.install(p.cfg.WANAddr)
	}
	return nil
}

// sendBatch sends msgs as one batch on the lasting socket. p.mu is held.
func (p *Plane) sendBatch(msgs []netlink.Message) error {
	return p.settle(p.conn.sendBatch(msgs))
}

// settle passes err on after one exchange on the lasting socket. An error
// that the kernel put in an acknowledgement (a bare errno) leaves the socket
// in step: google/nftables has read one reply for each message. Any other
// error, such as ENOBUFS from recvmsg or a reply the library did not expect,
// may leave replies unread that the next batch would take for its own, so the
// socket is replaced. If a new one cannot be had, the old one stays. Owned
// tables go with the old socket: Lost says so.
func (p *Plane) settle(err error) error {
	if err == nil || fromKernel(err) {
		return err
	}
	if c, nerr := dialNFT(p.opts); nerr == nil {
		_ = p.conn.CloseLasting()
		p.conn = c
		if p.cfg.Owner {
			select {
			case p.lost <- struct{}{}:
			default:
			}
		}
	}
	return err
}

// Lost receives a value when the Plane had to replace its socket after a
// fault and its tables, owned by the old socket (Config.Owner), went with
// it; the kernel sends no notification of that. The caller then does as
// after `nft flush ruleset` without owned tables: Intact reports false,
// Reinstall, and add the calls again.
func (p *Plane) Lost() <-chan struct{} { return p.lost }

// fromKernel reports whether err is an errno from a netlink acknowledgement
// rather than from a system call on the socket.
func fromKernel(err error) bool {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return false
	}
	var errno unix.Errno
	return errors.As(err, &errno)
}

// Close deletes the table and closes the socket. A table that is already
// gone is not an error. The Plane must not be used after Close.
func (p *Plane) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ferr error
	if p.cfg.FastPath {
		ferr = p.fast.deleteTable() // delete table netdev pptp_alg
	}
	p.conn.DelTable(p.obj.table) // delete table ip pptp_alg
	err := p.conn.Flush()        // the socket closes next: no need to settle
	if errors.Is(err, unix.ENOENT) {
		err = nil
	}
	if err == nil {
		err = ferr
	}
	// After the table: nothing is marked now.
	if rerr := p.route.remove(); err == nil {
		err = rerr
	}
	if cerr := p.conn.CloseLasting(); err == nil {
		err = cerr
	}
	p.dump.close()
	if err != nil {
		return fmt.Errorf("nat: close table ip %s: %w", p.cfg.Table, err)
	}
	return nil
}

// Reinstall installs the table again from the Config, replacing whatever is
// there, in one batch. It keeps no elements: the caller adds its calls again.
// Use it after Installed reports the table gone.
func (p *Plane) Reinstall() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.install(); err != nil {
		return fmt.Errorf("nat: reinstall table ip %s: %w", p.cfg.Table, err)
	}
	p.fast.refill = false // the caller adds its calls now
	return nil
}

// SetRedirect switches how new LAN control connections reach the relay: by
// a NAT redirect (on) or by tproxy (off), in one batch that flushes
// relay_prerouting and relay_redirect and adds their rules for the mode.
// The tproxy rule and route exist only in tproxy mode: added before the
// switch to it, removed after the switch away, so no forwarded packet pays
// a policy rule lookup while the redirect serves. Connections the relay
// holds by the redirect keep their conntrack NAT; those it holds by tproxy
// lose their route, and their clients reconnect.
func (p *Plane) SetRedirect(on bool) (err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.Redirect == on {
		return nil
	}
	if !on {
		err = p.route.install()
	}
	if err == nil {
		cfg := p.cfg
		cfg.Redirect = on
		p.conn.FlushChain(p.obj.relayPre)   // flush chain ip pptp_alg relay_prerouting
		p.conn.FlushChain(p.obj.relayRedir) // flush chain ip pptp_alg relay_redirect
		for _, r := range p.obj.relayModeRules(cfg) {
			p.conn.AddRule(r)
		}
		err = p.settle(p.conn.Flush())
	}
	if err == nil {
		p.cfg.Redirect = on
		if on {
			err = p.route.remove()
		}
	}
	if err != nil {
		return fmt.Errorf("nat: set redirect %v: %w", on, err)
	}
	return nil
}

// CheckRoute adds the tproxy rule and route again if either is gone (`ip
// rule flush`, a network restart that clears rules), and reports whether it
// did. Without them the LAN's control connections would be forwarded
// instead of reaching the relay. In redirect mode there are none to check.
func (p *Plane) CheckRoute() (restored bool, err error) {
	p.mu.Lock()
	redirect := p.cfg.Redirect
	p.mu.Unlock()
	if redirect {
		return false, nil
	}
	return p.route.ensure() // its caller runs SetRedirect and CheckRoute in turn
}

// Installed reports whether the table still exists, for detecting
// `nft flush ruleset` or `nft delete table ip pptp_alg` by someone else.
func (p *Plane) Installed() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.conn.ListTableOfFamily(p.cfg.Table, nftables.TableFamilyIPv4)
	err = p.settle(err)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	default:
		return false, fmt.Errorf("nat: list table ip %s: %w", p.cfg.Table, err)
	}
}

// SetWANAddr replaces the source NAT rule for outbound GRE, in one batch
// that flushes gre_postrouting and adds the new rule. An invalid address
// installs the rule that drops outbound PPTP GRE instead.
func (p *Plane) SetWANAddr(a netip.Addr) error {
	if a.IsValid() {
		var err error
		if a, err = ipv4(a); err != nil {
			return fmt.Errorf("nat: set WAN address: %w", err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conn.FlushChain(p.obj.grePost) // flush chain ip pptp_alg gre_postrouting
	p.conn.AddRule(p.obj.snatRule(p.cfg.WAN, a))
	if err := p.settle(p.conn.Flush()); err != nil {
		return fmt.Errorf("nat: set WAN address %v: %w", a, err)
	}
	p.cfg.WANAddr = a
	if p.cfg.FastPath {
		// Now, not at the next check: the old rule would source-NAT to
		// the old address. Empty until the caller's calls are added again.
		_ = p.fast.install(a)
	}
	return nil
}

// AddInbound maps GRE from server carrying natID to client with clientID:
//
//	add element ip pptp_alg gre_in { SERVER . NATID : CLIENT . CLIENTID }
//
// Adding the same mapping twice is not an error; adding a different value
// under an existing key is (EEXIST): the caller must delete it first.
func (p *Plane) AddInbound(server netip.Addr, natID uint16, client netip.Addr, clientID uint16) error {
	return p.Add([]Addition{{Server: server, NATID: natID, Client: client, ClientID: clientID}})[0]
}

// DeleteInbound removes the mapping of server and natID:
//
//	delete element ip pptp_alg gre_in { SERVER . NATID }
//
// A mapping that is already gone, with or without the whole table, is not an
// error: the caller wanted it gone and it is.
func (p *Plane) DeleteInbound(server netip.Addr, natID uint16) error {
	err := p.deleteInbound(server, natID)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nat: delete inbound %v/%d: %w", server, natID, err)
	}
	return nil
}

func (p *Plane) deleteInbound(server netip.Addr, natID uint16) error {
	s, err := ipv4(server)
	if err != nil {
		return err
	}
	el := nftables.SetElement{Key: inKey(s, natID)}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deleteElement(p.obj.greIn, p.fast.obj.greIn, el)
}

// AddOutbound lets client send GRE to server carrying serverID:
//
//	add element ip pptp_alg gre_out { CLIENT . SERVER . SERVERID }
//
// Adding an element that exists is not an error.
func (p *Plane) AddOutbound(client, server netip.Addr, serverID uint16) error {
	return p.Add([]Addition{{Outbound: true, Client: client, Server: server, ServerID: serverID}})[0]
}

// DeleteOutbound removes what AddOutbound added:
//
//	delete element ip pptp_alg gre_out { CLIENT . SERVER . SERVERID }
//
// An element that is already gone, with or without the whole table, is not
// an error.
func (p *Plane) DeleteOutbound(client, server netip.Addr, serverID uint16) error {
	err := p.deleteOutbound(client, server, serverID)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nat: delete outbound %v->%v/%d: %w", client, server, serverID, err)
	}
	return nil
}

func (p *Plane) deleteOutbound(client, server netip.Addr, serverID uint16) error {
	c, err := ipv4(client)
	if err != nil {
		return err
	}
	s, err := ipv4(server)
	if err != nil {
		return err
	}
	el := nftables.SetElement{Key: outKey(c, s, serverID)}
	// The call's gre_calls element. Two calls share one only if the server
	// gave both the same call ID, which it cannot tell apart itself; the
	// first one's end then takes it.
	call := nftables.SetElement{Key: inKey(s, serverID)}
	p.mu.Lock()
	defer p.mu.Unlock()
	err = p.deleteElement(p.obj.greOut, p.fast.obj.greOut, el)
	// A batch of its own: one that is already gone (a flushed set) must
	// not keep gre_out's element, nor gre_out's keep this one.
	if qerr := p.queue(false, p.obj.greCalls, call); qerr != nil {
		return errors.Join(err, qerr)
	}
	if cerr := p.sendQueued(); cerr != nil && !errors.Is(cerr, unix.ENOENT) && err == nil {
		err = cerr
	}
	return err
}

// deleteElement deletes el from the ip table's set s and, if the fast
// path holds it, from its counterpart fs there, in one batch, the fast
// path's first, so that no GRE takes the fast path once the ip table's
// element is gone. (Additions go through sendAdditions.) p.mu is held.
//
// If the batch fails, the ip table's part is tried alone: a fast path that
// lost its table or an element must not keep a call's mapping. The fast
// path is then rebuilt at the next CheckFastPath.
func (p *Plane) deleteElement(s, fs *nftables.Set, el nftables.SetElement) error {
	fastEl := p.fast.deletion(fs, el.Key)
	if fastEl != nil {
		if err := p.queue(false, fs, *fastEl); err != nil {
			return err
		}
	}
	if err := p.queue(false, s, el); err != nil {
		return err
	}
	err := p.sendQueued()
	if err == nil || fastEl == nil {
		return err
	}
	p.fast.dirty = true
	if err := p.queue(false, s, el); err != nil {
		return err
	}
	return p.sendQueued()
}

// queue queues el's addition to or deletion from s, for sendQueued.
func (p *Plane) queue(add bool, s *nftables.Set, el nftables.SetElement) error {
	return p.elements.queue(add, s, []nftables.SetElement{el})
}

// sendQueued sends what queue queued as one transaction on the lasting
// socket (nftConn.sendElements). p.mu is held.
func (p *Plane) sendQueued() error {
	return p.settle(p.conn.sendElements(&p.elements))
}
