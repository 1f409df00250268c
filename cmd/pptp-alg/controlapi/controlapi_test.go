package controlapi

import (
	"encoding/json"
	"testing"
	"time"
)

// TestWire pins the JSON that scripts outside Go read (the rpcd plugin
// behind LuCI, jsonfilter in shell): a renamed field breaks them silently.
func TestWire(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"mapping", Mapping{Client: "192.168.1.2", ClientCallID: 7, Server: "203.0.113.9", ServerCallID: 40000, NATCallID: 1,
			Established: true, PacketsIn: 1, PacketsOut: 2, BytesIn: 3, BytesOut: 4, Since: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
			`{"client":"192.168.1.2","client_call_id":7,"server":"203.0.113.9","server_call_id":40000,"nat_call_id":1,"established":true,` +
				`"packets_in":1,"packets_out":2,"bytes_in":3,"bytes_out":4,"since":"2026-01-02T03:04:05Z"}`},
		{"toggle", ToggleReply{Changed: true, CallsReleased: 2, Status: Status{Version: "1", LAN: []string{"br-lan"}, WAN: "wan",
			RelayPort: 1724, Table: "pptp_alg", KernelFeatures: []string{}, KernelPPTPHelper: []HelperUse{{Where: "w", Fix: "f"}}}},
			`{"changed":true,"calls_released":2,"status":{"version":"1","enabled":false,"lan":["br-lan"],"wan":"wan","wan_addr":"",` +
				`"relay_port":1724,"router_calls":false,"table":"pptp_alg","tables_owned":false,"fast_path":false,"control_connections":0,"calls":0,"kernel_features":[],` +
				`"kernel_pptp_helper":[{"where":"w","sees_relayed_connections":false,"fix":"f"}]}}`},
		{"error", Error{Error: "no"}, `{"error":"no"}`},
		{"debug", Debug{Goroutines: 3, HeapAlloc: 4}, `{"goroutines":3,"heap_alloc":4}`},
	} {
		b, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, b, tc.want)
		}
	}
}
