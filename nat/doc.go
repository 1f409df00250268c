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
// 1723) itself: relay_prerouting redirects them from the LAN to a local relay
// port, and relay_input keeps that port reachable only through the redirect.
// The data channel, enhanced GRE (RFC 2637 section 4.1), never reaches user
// space. Its Key field carries the receiver's Call ID at byte offset 6. The
// chain gre_prerouting sends PPTP GRE, by input interface (map gre_iifs), to
// gre_from_wan or gre_from_lan, which translate it statelessly with one
// lookup each:
//
//	gre_in:  server . NAT call ID         -> client . client call ID (WAN to LAN)
//	gre_out: client . server . server call ID                       (LAN to WAN check)
//
// A LAN host may send GRE only for its own calls, and GRE from the WAN with an
// unknown key is dropped silently: an ICMP error makes the server abort the
// call. gre_postrouting then rewrites the source of outbound GRE to the WAN
// address.
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
