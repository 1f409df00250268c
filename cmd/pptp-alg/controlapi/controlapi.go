// Package controlapi is the contract of pptp-alg's control socket: the
// requests the daemon answers and the JSON of each reply. The daemon
// encodes these types, the CLI (`pptp-alg status --json`, `mappings
// --json`) prints them, and the end-to-end tests decode them, so that a
// field added or renamed changes all three at once.
//
// One connection carries one request line (a request name) and one JSON
// reply line, or {"error": "..."}. The socket is root-only.
//
// It lives under cmd/pptp-alg because the socket is the command's: alg, nat
// and conntrack know nothing of it. It is not internal, so that
// scripts/e2e can import it; it imports nothing beyond the standard library
// packages the daemon already links.
package controlapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// The requests.
const (
	RequestStatus   = "status"   // reply: Status
	RequestEnable   = "enable"   // reply: ToggleReply
	RequestDisable  = "disable"  // reply: ToggleReply
	RequestMappings = "mappings" // reply: []Mapping, one line however long
	RequestDebug    = "debug"    // reply: Debug; for the leak tests
	// RequestDrop is followed by the call's server address and NAT call
	// ID: "drop 203.0.113.9 1". Reply: DropReply.
	RequestDrop = "drop"
)

// Status is the daemon's state, as `pptp-alg status --json` prints it.
type Status struct {
	Version string   `json:"version"`
	Enabled bool     `json:"enabled"`
	LAN     []string `json:"lan"`
	WAN     string   `json:"wan"`
	// WANAddr is the address calls leave from; "" while disabled.
	WANAddr   string `json:"wan_addr"`
	RelayPort int    `json:"relay_port"`
	// RouterCalls: the router's own PPTP connections are relayed too.
	RouterCalls bool   `json:"router_calls"`
	Table       string `json:"table"` // nftables table, family ip
	// FastPath says whether known calls' GRE is forwarded from ingress
	// (the netdev table of the same name); FastPathOff says why not.
	// LANControl is how new LAN control connections reach the relay:
	// "tproxy", or "redirect" (NAT) while a LAN bridge passes its frames
	// through the IP hooks (bridge-nf-call-iptables=1); "" while disabled.
	LANControl string `json:"lan_control,omitempty"`
	// TablesOwned: the tables are owned by the daemon's netlink socket
	// (the kernel's table flag owner), so `nft flush ruleset` leaves them.
	TablesOwned        bool     `json:"tables_owned"`
	FastPath           bool     `json:"fast_path"`
	FastPathOff        string   `json:"fast_path_off,omitempty"`
	ControlConnections int      `json:"control_connections"`
	Calls              int      `json:"calls"`
	KernelFeatures     []string `json:"kernel_features"`
	// KernelPPTPHelper lists where a rule assigns the kernel's own PPTP
	// helper; empty, not null, when none does.
	KernelPPTPHelper []HelperUse `json:"kernel_pptp_helper"`
	// RulesetError says why KernelPPTPHelper could not be found out.
	RulesetError string `json:"ruleset_error,omitempty"`
}

// HelperUse is one place where the kernel's PPTP helper is assigned.
type HelperUse struct {
	Where string `json:"where"` // table, chain and hooks
	// SeesRelayedConnections: the helper can land on a connection that
	// pptp-alg relays, which it then refuses.
	SeesRelayedConnections bool   `json:"sees_relayed_connections"`
	Fix                    string `json:"fix"`
}

// ToggleReply answers enable and disable.
type ToggleReply struct {
	Changed bool `json:"changed"`
	// CallsReleased counts the calls a disable ended.
	CallsReleased int    `json:"calls_released"`
	Status        Status `json:"status"`
}

// Mapping is one call, as `pptp-alg mappings --json` prints it. In is
// server to LAN client, Out the other way.
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

// DropReply answers drop: the call that was dropped, as mappings listed
// it, without counters.
type DropReply struct {
	Dropped Mapping `json:"dropped"`
}

// Debug is what a leak would show, read after a garbage collection.
type Debug struct {
	Goroutines int    `json:"goroutines"`
	HeapAlloc  uint64 `json:"heap_alloc"` // live heap bytes
}

// Error is the reply to a request that failed.
type Error struct {
	Error string `json:"error"`
}

// Ask sends one request to the daemon at socket and decodes its reply into
// v. A reply of Error becomes an error "daemon: ...".
func Ask(ctx context.Context, socket, request string, v any) error {
	var dialer net.Dialer
	c, err := dialer.DialUnix(ctx, "unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
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
	var e Error
	if json.Unmarshal(raw, &e) == nil && e.Error != "" {
		return errors.New("daemon: " + e.Error)
	}
	return json.Unmarshal(raw, v)
}
