package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// step is one step of luci.mjs (see there).
type step map[string]any

// stepResult is what luci.mjs reports of a step.
type stepResult struct {
	Step     string    `json:"step"`
	LoggedIn bool      `json:"loggedIn"`
	Title    string    `json:"title"`
	File     string    `json:"file"`
	Text     string    `json:"text"`
	Checked  bool      `json:"checked"`
	Invalid  bool      `json:"invalid"`
	Outcome  string    `json:"outcome"`
	Found    bool      `json:"found"`
	Controls []control `json:"controls"`
}

type control struct {
	Tag      string `json:"tag"`
	Type     string `json:"type"`
	ID       string `json:"id"`
	Label    string `json:"label"`
	Disabled bool   `json:"disabled"`
}

// browse runs steps in Chromium at host h1, a LAN host, against LuCI on
// the box's LAN address.
func (b *box) browse(ctx context.Context, steps ...step) ([]stepResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	js, err := json.Marshal(steps)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", b.hosts["h1"].ns, "node",
		filepath.Join(b.repo, "scripts/openwrt-box/luci.mjs"), "http://"+lanAddr, b.out, string(js))
	cmd.Env = append(b.env(), "BOX_NODE_MODULES="+filepath.Join(b.node, "node_modules"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var reply struct {
		Error   string       `json:"error"`
		Results []stepResult `json:"results"`
	}
	if err := json.Unmarshal(out, &reply); err != nil {
		return nil, fmt.Errorf("browser: %v: %v\n%s%s", runErr, err, tail(string(out), 5), tail(stderr.String(), 10))
	}
	if reply.Error != "" {
		return reply.Results, fmt.Errorf("browser, after %d steps: %s", len(reply.Results), firstLines(reply.Error, 4))
	}
	return reply.Results, nil
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// last returns the last result of the given kind.
func last(rs []stepResult, kind string) stepResult {
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].Step == kind {
			return rs[i]
		}
	}
	return stepResult{}
}

const pagePath = "admin/network/vpn-passthrough"

// asRoot logs in as root and opens the page: the steps every LuCI check
// starts with.
func asRoot(steps ...step) []step {
	return append([]step{{"login": []string{"root", "box"}}, {"open": pagePath}}, steps...)
}
