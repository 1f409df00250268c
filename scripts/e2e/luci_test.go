package e2e

import (
	"context"
	"encoding/json"
	"fmt"
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
// the daemon's binary first in PATH, its socket in PPTP_ALG_SOCKET and
// the test's stand-ins for the init script and logread, and decodes the
// one JSON object it must print.
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
		"PPTP_ALG_SOCKET="+r.socket, "PPTP_ALG_INIT="+r.fakeInit, "PPTP_ALG_LOGREAD="+r.fakeLogread)
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

// fakeInitAndLogread writes the stand-ins: an init script that records its
// action and answers "enabled" with success, and a logread that prints
// lines holding every ASCII control character the shell can carry.
func (r *router) fakeInitAndLogread(t *testing.T) (actions, logLines string) {
	t.Helper()
	dir := t.TempDir()
	actions = filepath.Join(dir, "actions")
	r.fakeInit = filepath.Join(dir, "init")
	r.fakeLogread = filepath.Join(dir, "logread")
	var b strings.Builder
	for c := 1; c < 32; c++ {
		if c != '\n' {
			b.WriteByte(byte(c))
		}
	}
	logLines = "pptp-alg: \"quoted\" \\ back " + b.String() + " end\nsecond line caf\u00e9"
	for name, text := range map[string]string{
		r.fakeInit:    "#!/bin/sh\necho \"$1\" >>" + actions + "\n[ \"$1\" != fail ]\n",
		r.fakeLogread: "#!/bin/sh\n[ \"$1 $2\" = \"-e pptp-alg\" ] || exit 1\ncat " + filepath.Join(dir, "log") + "\n",
	} {
		if err := os.WriteFile(name, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "log"), []byte(logLines+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return actions, logLines
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
// what the daemon says, and that every method answers one JSON object.
func TestLuciRPCDPlugin(t *testing.T) {
	r := newRouter(t, 2, lab.FirewallFW4)
	actions, logLines := r.fakeInitAndLogread(t)

	methods := r.rpcdPlugin(t, "", "list")
	for _, m := range []string{"status", "mappings", "doctor", "log", "enable", "disable", "drop", "service"} {
		if _, ok := methods[m]; !ok {
			t.Errorf("list: no method %s: %v", m, methods)
		}
	}

	// No calls yet: an empty page, never null.
	got := r.rpcdPlugin(t, "{}", "call", "mappings")
	if string(got["mappings"]) != "[]" || string(got["total"]) != "0" || got["error"] != nil {
		t.Errorf("call mappings with no calls = %s, want {\"total\":0,\"offset\":0,\"mappings\":[]}", jsonText(got))
	}

	r.startSimServer(t, "--early-gre")
	// Held until the test ends: the disable below ends them from our side.
	r.holdSim(t, r.Hosts[0], "--call-ids", "7,8", "--pings", "2")
	r.holdSim(t, r.Hosts[1], "--call-ids", "9", "--pings", "2")
	direct := r.mappings(t)
	if len(direct) != 3 {
		t.Fatalf("daemon lists %d calls, want the 3 held: %+v", len(direct), direct)
	}
	counters := func(m controlapi.Mapping) controlapi.Mapping {
		m.PacketsIn, m.PacketsOut, m.BytesIn, m.BytesOut = 0, 0, 0, 0
		return m
	}
	// The page asks a page at a time: all, the first two, the last.
	for _, tc := range []struct {
		args      string
		from, to  int
		offsetArg int
	}{
		{`{}`, 0, 3, 0},
		{`{"offset": 0, "limit": 2}`, 0, 2, 0},
		{`{"offset":2,"limit":2}`, 2, 3, 2},
	} {
		got = r.rpcdPlugin(t, tc.args, "call", "mappings")
		var page struct {
			Total, Offset int
			Mappings      []controlapi.Mapping
		}
		raw, _ := json.Marshal(got)
		if err := json.Unmarshal(raw, &page); err != nil {
			t.Fatalf("call mappings %s: %v: %s", tc.args, err, raw)
		}
		if page.Total != 3 || page.Offset != tc.offsetArg {
			t.Errorf("call mappings %s: total %d offset %d, want 3 and %d", tc.args, page.Total, page.Offset, tc.offsetArg)
		}
		if diff := cmp.Diff(direct[tc.from:tc.to], page.Mappings, cmp.Transformer("ids", counters)); diff != "" {
			t.Errorf("call mappings %s differs from mappings --json (-daemon +plugin):\n%s", tc.args, diff)
		}
	}

	st := r.rpcdPlugin(t, "{}", "call", "status")
	if string(st["running"]) != "true" || string(st["boot"]) != "true" {
		t.Errorf("call status: running %s, boot %s; want true, true (the init script says enabled)", st["running"], st["boot"])
	}
	var viaStatus map[string]any
	json.Unmarshal(st["daemon"], &viaStatus)
	if diff := cmp.Diff(r.daemonStatus(t), viaStatus); diff != "" {
		t.Errorf("call status's daemon differs from status --json (-daemon +plugin):\n%s", diff)
	}
	if viaStatus["enabled"] != true || viaStatus["calls"] != 3.0 {
		t.Errorf("call status = %v, want enabled with 3 calls", viaStatus)
	}

	// doctor's checks, as objects; the daemon check passes.
	doc := r.rpcdPlugin(t, "{}", "call", "doctor")
	var checks []struct {
		OK        bool
		Text, Fix string
	}
	if err := json.Unmarshal(doc["checks"], &checks); err != nil || len(checks) < 5 {
		t.Fatalf("call doctor: %v: %s", err, jsonText(doc))
	}
	found := false
	for _, c := range checks {
		if strings.HasPrefix(c.Text, "daemon: running and enabled") && c.OK {
			found = true
		}
		if !c.OK && c.Fix == "" {
			t.Errorf("call doctor: a failed check without a fix: %+v", c)
		}
	}
	if !found {
		t.Errorf("call doctor: no passed daemon check in %+v", checks)
	}

	// The log, every control character escaped.
	lg := r.rpcdPlugin(t, "{}", "call", "log")
	var lines []string
	if err := json.Unmarshal(lg["lines"], &lines); err != nil || strings.Join(lines, "\n") != logLines {
		t.Errorf("call log = %q, %v; want the lines %q", lines, err, logLines)
	}

	// Drop the second host's call.
	var drop controlapi.Mapping
	for _, m := range direct {
		if m.Client == r.Hosts[1].Addr.String() {
			drop = m
		}
	}
	res := r.rpcdPlugin(t, fmt.Sprintf(`{"server":"%s","nat_call_id":%d}`, drop.Server, drop.NATCallID), "call", "drop")
	if string(res["ok"]) != "true" {
		t.Errorf("call drop = %s", jsonText(res))
	}
	if ms := r.mappings(t); len(ms) != 2 {
		t.Errorf("after call drop, %d calls, want 2: %+v", len(ms), ms)
	}
	res = r.rpcdPlugin(t, fmt.Sprintf(`{"server":"%s","nat_call_id":%d}`, drop.Server, drop.NATCallID), "call", "drop")
	if string(res["ok"]) != "false" || !strings.Contains(string(res["error"]), "no call to") {
		t.Errorf("call drop of a dropped call = %s, want ok false and why", jsonText(res))
	}
	res = r.rpcdPlugin(t, `{"server":"$(reboot)","nat_call_id":1}`, "call", "drop")
	if string(res["ok"]) != "false" {
		t.Errorf("call drop with a bad server = %s", jsonText(res))
	}

	// The service buttons run the init script with the action, and only
	// start, stop and restart.
	for _, a := range []string{"restart", "stop", "start"} {
		if res := r.rpcdPlugin(t, fmt.Sprintf(`{"action":"%s"}`, a), "call", "service"); string(res["ok"]) != "true" {
			t.Errorf("call service %s = %s", a, jsonText(res))
		}
	}
	for _, a := range []string{"fail", "enable", "; reboot", ""} {
		if res := r.rpcdPlugin(t, fmt.Sprintf(`{"action":"%s"}`, a), "call", "service"); string(res["ok"]) != "false" {
			t.Errorf("call service %q = %s, want ok false", a, jsonText(res))
		}
	}
	if b, err := os.ReadFile(actions); err != nil || string(b) != "enabled\nrestart\nstop\nstart\n" {
		t.Errorf("the init script ran %q, %v; want enabled (status), restart, stop, start", b, err)
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
