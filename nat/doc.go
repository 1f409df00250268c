// Package nat owns pptp-alg's kernel data plane: its nftables tables (family
// ip, "pptp_alg" by default, and the fast path's of family netdev and the
// same name), their maps and chains, the adding and removing of call
// mappings, and their counters. It is the only package that talks nftables:
// through github.com/google/nftables, and directly through
// github.com/mdlayher/netlink for the counter dumps and the fast path's
// rules (google/nftables has no fwd). It also asks rtnetlink for the routes
// and interfaces the fast path forwards by.
//
// The daemon relays PPTP control connections (RFC 2637 section 1.3, TCP port
// 1723) itself: relay_prerouting (entered from gre_prerouting for TCP to
// port 1723 only) hands them from the LAN to the relay's
// transparent socket by tproxy, untracked and marked, and a policy rule
// (tproxyroute.go) routes the marked packets to the local stack;
// relay_to_lan leaves the relay's replies untracked too, and relay_input
// keeps the relay port reachable only by tproxy and the router's own
// redirect.
// The data channel, enhanced GRE (RFC 2637 section 4.1), never reaches user
// space. Its Key field carries the receiver's Call ID at byte offset 6. The
// chain gre_prerouting sends PPTP GRE, by input interface (map gre_iifs), to
// gre_from_wan or gre_from_lan, which translate it statelessly with one
// lookup each:
//
//	gre_in:  server . NAT call ID         -> client . client call ID (WAN to LAN)
//	gre_out: client . server . server call ID                       (LAN to WAN check)
//
// pptp-alg owns only the calls it relays. GRE that matches none of them goes
// on to conntrack, the firewall and the local stack as if pptp-alg were not
// running (the router's own PPTP server, a port-forwarded server on the LAN),
// except GRE from a LAN host that carries another client's relayed call
// (set gre_calls: server . server call ID), which is dropped. A relayed
// call's inbound entries exist before its request reaches the server, so its
// GRE never meets the firewall's ICMP errors, which make a server abort.
// gre_postrouting then rewrites the source of outbound GRE to the WAN
// address.
//
// relay_prerouting skips connections to the router's own addresses (fib
// daddr type local). relay_output, with Config.RouterCalls, redirects the
// router's own control connections out of the WAN to the relay as well, all
// but the relay's own (Config.RelayMark), so that the router's calls take
// call IDs from the same table as the LAN's; their inbound GRE is translated
// in gre_from_wan and delivered locally, never by the fast path.
//
// The fast path (fastpath.go) hooks the ingress of the WAN and each LAN and
// forwards the GRE of calls it holds straight to the other side with nft's
// fwd, past routing, conntrack and the firewall's chains. It leaves anything
// unusual to the ip table above, which holds every call regardless.
//
// Why GRE is untracked: conntrack's GRE version 1 tuple takes its destination
// key from the packet but its source key from a keymap that only the kernel's
// own PPTP helper (nf_conntrack_pptp) fills. Without that helper the two
// directions of one call become unrelated conntrack entries, and kernel NAT
// never rewrites a GRE key unless the entry has a helper master. This package
// therefore marks PPTP GRE notrack at priority raw and does all of the
// translation itself with payload writes, keyed by call ID.
//
// Key layout: concatenated set keys and map data put each field in its own
// 4-byte register, so a 16-bit call ID is stored big-endian in the first two
// bytes of a 4-byte slot followed by two zero bytes.
package nat
