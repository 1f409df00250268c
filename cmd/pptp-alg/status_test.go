package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
)

func enabledStatus() controlapi.Status {
	return controlapi.Status{
		Version: "1.2.3", Enabled: true, LAN: []string{"br-lan", "br-guest"}, WAN: "wan", WANAddr: "203.0.113.1",
		RelayPort: 1724, Table: "pptp_alg", ControlConnections: 1, Calls: 2, FastPath: true,
		KernelFeatures: []string{"nftables", "ctnetlink"}, KernelPPTPHelper: []controlapi.HelperUse{},
	}
}

func TestPrintStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   func(*controlapi.Status)
		want string
	}{
		{"enabled", func(*controlapi.Status) {}, `pptp-alg 1.2.3: enabled
LAN:          br-lan, br-guest
WAN:          wan, address 203.0.113.1
relay:        tcp port 1724, nftables table ip pptp_alg
carrying:     1 control connection, 2 calls
fast path:    on (ingress of wan, br-lan, br-guest, nftables table netdev pptp_alg)
kernel:       nftables, ctnetlink
PPTP helper:  not assigned
`},
		{"disabled", func(st *controlapi.Status) {
			st.Enabled, st.WANAddr, st.ControlConnections, st.Calls = false, "", 0, 0
		}, `pptp-alg 1.2.3: disabled: PPTP passes the firewall untranslated ('pptp-alg enable' turns it back on)
LAN:          br-lan, br-guest
WAN:          wan
relay:        tcp port 1724, nftables table ip pptp_alg
carrying:     0 control connections, 0 calls
kernel:       nftables, ctnetlink
PPTP helper:  not assigned
`},
		{"fast path off", func(st *controlapi.Status) {
			st.FastPath, st.FastPathOff = false, "WAN wan: interface not found"
		}, `pptp-alg 1.2.3: enabled
LAN:          br-lan, br-guest
WAN:          wan, address 203.0.113.1
relay:        tcp port 1724, nftables table ip pptp_alg
carrying:     1 control connection, 2 calls
fast path:    off, GRE goes through the ip table: WAN wan: interface not found
kernel:       nftables, ctnetlink
PPTP helper:  not assigned
`},
		{"helper after and before the redirect", func(st *controlapi.Status) {
			st.KernelPPTPHelper = []controlapi.HelperUse{
				{Where: "inet fw4 chain helper_lan (prerouting priority 0)"},
				{Where: "ip x chain y (prerouting priority -150)", SeesRelayedConnections: true},
			}
		}, `pptp-alg 1.2.3: enabled
LAN:          br-lan, br-guest
WAN:          wan, address 203.0.113.1
relay:        tcp port 1724, nftables table ip pptp_alg
carrying:     1 control connection, 2 calls
fast path:    on (ingress of wan, br-lan, br-guest, nftables table netdev pptp_alg)
kernel:       nftables, ctnetlink
PPTP helper:  assigned in inet fw4 chain helper_lan (prerouting priority 0); after pptp-alg's redirect ('pptp-alg doctor' gives the fix)
PPTP helper:  assigned in ip x chain y (prerouting priority -150); CONFLICT: can land on relayed connections, which are refused ('pptp-alg doctor' gives the fix)
`},
		{"LAN control by redirect, helper before it", func(st *controlapi.Status) {
			st.LANControl = "redirect"
			st.KernelPPTPHelper = []controlapi.HelperUse{
				{Where: "ip x chain y (prerouting priority -150)", SeesRelayedConnections: true},
			}
		}, `pptp-alg 1.2.3: enabled
LAN:          br-lan, br-guest
WAN:          wan, address 203.0.113.1
relay:        tcp port 1724, nftables table ip pptp_alg
carrying:     1 control connection, 2 calls
fast path:    on (ingress of wan, br-lan, br-guest, nftables table netdev pptp_alg)
LAN control:  by NAT redirect; ` + "`nft flush ruleset`" + ` resets busy control connections taken by the NAT redirect (no table flag owner before Linux 5.12)
kernel:       nftables, ctnetlink
PPTP helper:  assigned in ip x chain y (prerouting priority -150); CONFLICT: can land on relayed connections, which are refused ('pptp-alg doctor' gives the fix)
`},
		{"LAN control by redirect, tables owned", func(st *controlapi.Status) { st.LANControl, st.TablesOwned = "redirect", true }, `pptp-alg 1.2.3: enabled
LAN:          br-lan, br-guest
WAN:          wan, address 203.0.113.1
relay:        tcp port 1724, nftables table ip pptp_alg
carrying:     1 control connection, 2 calls
fast path:    on (ingress of wan, br-lan, br-guest, nftables table netdev pptp_alg)
LAN control:  by NAT redirect
kernel:       nftables, ctnetlink
PPTP helper:  not assigned
`},
		{"LAN control by tproxy", func(st *controlapi.Status) { st.LANControl = "tproxy" }, `pptp-alg 1.2.3: enabled
LAN:          br-lan, br-guest
WAN:          wan, address 203.0.113.1
relay:        tcp port 1724, nftables table ip pptp_alg
carrying:     1 control connection, 2 calls
fast path:    on (ingress of wan, br-lan, br-guest, nftables table netdev pptp_alg)
LAN control:  by tproxy
kernel:       nftables, ctnetlink
PPTP helper:  not assigned
`},
		{"ruleset unreadable, no features", func(st *controlapi.Status) {
			st.RulesetError, st.KernelFeatures = "nat: list tables: operation not permitted", nil
		}, `pptp-alg 1.2.3: enabled
LAN:          br-lan, br-guest
WAN:          wan, address 203.0.113.1
relay:        tcp port 1724, nftables table ip pptp_alg
carrying:     1 control connection, 2 calls
fast path:    on (ingress of wan, br-lan, br-guest, nftables table netdev pptp_alg)
kernel:       none found
PPTP helper:  unknown, cannot read the ruleset: nat: list tables: operation not permitted
`},
	} {
		st := enabledStatus()
		tc.st(&st)
		var b bytes.Buffer
		printStatus(&b, st)
		if diff := cmp.Diff(tc.want, b.String()); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestStatusJSON: the field names are the ones status --help promises.
func TestStatusJSON(t *testing.T) {
	st := enabledStatus()
	st.KernelPPTPHelper = []controlapi.HelperUse{{Where: "w", Fix: "f"}}
	st.FastPathOff = "why"
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range fields {
		names = append(names, k)
		if !strings.Contains(statusHelp.about, k) {
			t.Errorf("status --help does not name the field %s", k)
		}
	}
	slices.Sort(names)
	want := []string{"calls", "control_connections", "enabled", "fast_path", "fast_path_off", "kernel_features", "kernel_pptp_helper", "lan",
		"relay_port", "router_calls", "table", "tables_owned", "version", "wan", "wan_addr"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
	if got := string(fields["kernel_pptp_helper"]); got != `[{"where":"w","sees_relayed_connections":false,"fix":"f"}]` {
		t.Errorf("kernel_pptp_helper = %s", got)
	}
}
