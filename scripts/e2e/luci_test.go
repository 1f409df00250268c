package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
	"github.com/pptp-alg/pptp-alg/scripts/lab"
)

// rpcdPlugin runs the LuCI app's rpcd plugin in the router namespace as
// rpcd would (`list`, or `call METHOD` with the arguments on stdin), with
// the daemon's binary first in PATH and its socket in PPTP_ALG_SOCKET, and
// decodes the one JSON object it must print.
func (r *router) rpcdPlugin(t *testing.T, stdin string, args ...string) map[string]json.RawMessage {
	t.Helper()
	root, err := lab.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(root, "firmware/luci-app-pptp-alg/root/usr/libexec/rpcd/luci.pptp-alg")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := r.Command(ctx, r.Router, plugin, args...)
	cmd.Env = append(os.Environ(),
		"PATH="+filepath.Dir(algBin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"PPTP_ALG_SOCKET="+r.socket)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("luci.pptp-alg %v: %v\n%s", args, err, out)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(out, &obj); err != nil {
		t.Fatalf("luci.pptp-alg %v: not one JSON object (rpcd wants one): %v\n%s", args, err, out)
	}
	return obj
}

// daemonStatus is `pptp-alg status --json` as a generic object.
func (r *router) daemonStatus(t *testing.T) map[string]any {
	t.Helper()
	out, err := r.Run(context.Background(), r.Router, algBin, "status", "--json", "--socket", r.socket)
	if err != nil {
		t.Fatalf("status --json: %v", err)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// TestLuciRPCDPlugin runs the rpcd plugin behind LuCI's VPN Passthrough
// page against the real daemon carrying real calls, and checks it says
// what the daemon says.
func TestLuciRPCDPlugin(t *testing.T) {
	r := newRouter(t, 1, lab.FirewallFW4)

	methods := r.rpcdPlugin(t, "", "list")
	for _, m := range []string{"status", "mappings", "enable", "disable"} {
		if _, ok := methods[m]; !ok {
			t.Errorf("list: no method %s: %v", m, methods)
		}
	}

	// No calls yet: an empty list, never null.
	got := r.rpcdPlugin(t, "{}", "call", "mappings")
	if string(got["mappings"]) != "[]" || got["error"] != nil {
		t.Errorf("call mappings with no calls = %s, want {\"mappings\":[]}", jsonText(got))
	}

	r.startSimServer(t, "--early-gre")
	// Held until the test ends: the disable below ends them from our side.
	r.holdSim(t, r.Hosts[0], "--call-ids", "7,8", "--pings", "2")
	got = r.rpcdPlugin(t, "{}", "call", "mappings")
	var viaPlugin []controlapi.Mapping
	if err := json.Unmarshal(got["mappings"], &viaPlugin); err != nil {
		t.Fatalf("call mappings: %v: %s", err, jsonText(got))
	}
	direct := r.mappings(t)
	if len(direct) != 2 {
		t.Fatalf("daemon lists %d calls, want the 2 held: %+v", len(direct), direct)
	}
	// Counters only grow between the two reads; everything else is equal.
	for i := range viaPlugin {
		if i < len(direct) && (viaPlugin[i].PacketsIn > direct[i].PacketsIn || viaPlugin[i].PacketsOut > direct[i].PacketsOut) {
			t.Errorf("call %d: counters went backwards: plugin %+v, daemon %+v", i, viaPlugin[i], direct[i])
		}
	}
	counters := func(m controlapi.Mapping) controlapi.Mapping {
		m.PacketsIn, m.PacketsOut, m.BytesIn, m.BytesOut = 0, 0, 0, 0
		return m
	}
	if diff := cmp.Diff(direct, viaPlugin, cmp.Transformer("ids", counters)); diff != "" {
		t.Errorf("call mappings differs from mappings --json (-daemon +plugin):\n%s", diff)
	}
	t.Logf("call mappings: %s", got["mappings"])

	st := r.rpcdPlugin(t, "{}", "call", "status")
	var viaStatus map[string]any
	raw, _ := json.Marshal(st)
	json.Unmarshal(raw, &viaStatus)
	if diff := cmp.Diff(r.daemonStatus(t), viaStatus); diff != "" {
		t.Errorf("call status differs from status --json (-daemon +plugin):\n%s", diff)
	}
	if viaStatus["enabled"] != true || viaStatus["calls"] != 2.0 {
		t.Errorf("call status = %v, want enabled with 2 calls", viaStatus)
	}

	// The page's pause and resume buttons; pausing releases the calls.
	if res := r.rpcdPlugin(t, "{}", "call", "disable"); string(res["ok"]) != "true" {
		t.Fatalf("call disable = %s", jsonText(res))
	}
	if st := r.daemonStatus(t); st["enabled"] != false {
		t.Errorf("after call disable, status enabled = %v", st["enabled"])
	}
	if res := r.rpcdPlugin(t, "{}", "call", "enable"); string(res["ok"]) != "true" {
		t.Fatalf("call enable = %s", jsonText(res))
	}
	if st := r.daemonStatus(t); st["enabled"] != true {
		t.Errorf("after call enable, status enabled = %v", st["enabled"])
	}

	// With the daemon gone, the plugin still answers with an object.
	if err := r.daemon.Stop(); err != nil {
		t.Errorf("daemon: %v", err)
	}
	got = r.rpcdPlugin(t, "{}", "call", "status")
	if string(got["running"]) != "false" || got["error"] == nil {
		t.Errorf("call status with no daemon = %s, want running false and an error", jsonText(got))
	}
	got = r.rpcdPlugin(t, "{}", "call", "mappings")
	if string(got["mappings"]) != "[]" || got["error"] == nil {
		t.Errorf("call mappings with no daemon = %s, want an empty list and an error", jsonText(got))
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
