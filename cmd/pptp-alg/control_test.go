package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
)

// TestControlProtocol talks to a daemon that is disabled, so that no
// request touches the kernel but status reading the ruleset.
func TestControlProtocol(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := listenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	d := &daemon{
		cfg:      daemonConfig{lan: []string{"br-lan"}, wan: "wan", relayPort: 1724, table: "pptp_alg"},
		log:      slog.New(slog.DiscardHandler),
		features: []string{"nftables", "ctnetlink"},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.serveControl(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveControl: %v", err)
		}
	}()

	if _, err := listenControl(sock); err == nil || !strings.Contains(err.Error(), "another pptp-alg is running") {
		t.Errorf("second listener on a live socket: %v", err)
	}

	var st controlapi.Status
	if err := controlapi.Ask(ctx, sock, controlapi.RequestStatus, &st); err != nil {
		t.Fatal(err)
	}
	if st.Enabled || st.WAN != "wan" || st.RelayPort != 1724 || st.Version != version || st.WANAddr != "" ||
		len(st.KernelFeatures) != 2 || st.KernelPPTPHelper == nil {
		t.Errorf("status of a disabled daemon: %+v", st)
	}
	var ms []controlapi.Mapping
	if err := controlapi.Ask(ctx, sock, controlapi.RequestMappings, &ms); err != nil || ms == nil || len(ms) != 0 {
		t.Errorf("mappings of a disabled daemon: %v, %v; want []", ms, err)
	}
	var r controlapi.ToggleReply
	if err := controlapi.Ask(ctx, sock, controlapi.RequestDisable, &r); err != nil || r.Changed || r.Status.Enabled {
		t.Errorf("disable a disabled daemon: %+v, %v; want no change", r, err)
	}
	if err := controlapi.Ask(ctx, sock, "reboot", &r); err == nil || err.Error() != `daemon: unknown request "reboot"` {
		t.Errorf("unknown request: %v", err)
	}
	if err := controlapi.Ask(ctx, sock, "status now", &st); err == nil || err.Error() != `daemon: unknown request "status now"` {
		t.Errorf("status with an argument: %v", err)
	}
	var dr controlapi.DropReply
	if err := controlapi.Ask(ctx, sock, "drop 203.0.113.9 1", &dr); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("drop on a disabled daemon: %+v, %v", dr, err)
	}
	if err := controlapi.Ask(ctx, sock, "drop 203.0.113.9", &dr); err == nil || !strings.Contains(err.Error(), "drop wants a server address and a NAT call ID") {
		t.Errorf("drop without a call ID: %v", err)
	}

	// A daemon on its way out takes no enable.
	d.mu.Lock()
	d.closing = true
	d.mu.Unlock()
	if err := controlapi.Ask(ctx, sock, controlapi.RequestEnable, &r); err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Errorf("enable while stopping: %v", err)
	}
}
