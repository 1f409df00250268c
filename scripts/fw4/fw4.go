// Package fw4 renders the lab router's firewall: an nftables ruleset modelled
// on the one OpenWrt's firewall4 (fw4) generates from the default
// /etc/config/firewall, with the hooks fw4 offers to packages.
//
// fw4 splices partial rulesets from /usr/share/nftables.d into its table at
// every reload (see that directory's README in openwrt/firewall4):
// ruleset-pre and ruleset-post around the table, table-pre and table-post
// before the first and after the last chain, chain-pre/CHAIN and
// chain-post/CHAIN before the first and after the last rule of CHAIN. Render
// does the same with the files of a local nftables.d tree, so the project's
// fw4 includes are tested the way a router loads them.
package fw4

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
)

//go:embed ruleset.nft.tmpl
var rulesetText string

// Config describes the router the ruleset is for.
type Config struct {
	// LAN and WAN are the devices of the lan and wan zones.
	LAN, WAN string
	// PPTPHelper assigns the kernel's PPTP conntrack helper to TCP port
	// 1723 from lan, as fw4 does when kmod-nf-nathelper-extra is
	// installed.
	PPTPHelper bool
	// Includes is an nftables.d directory (the layout of
	// /usr/share/nftables.d) whose *.nft files are spliced in. Empty means
	// none.
	Includes string
	// WANInput are the admin's rules accepting traffic from wan to the
	// router itself (`config rule` with src wan, no dest, target ACCEPT).
	WANInput []Rule
	// Redirects are the admin's port forwards from wan (`config redirect`
	// with src wan, target DNAT), rendered as fw4 does, without NAT
	// reflection.
	Redirects []Redirect
}

// Rule is one accepted protocol, and port if it has ports.
type Rule struct {
	Name  string // the section's name, for the comment
	Proto string // tcp, udp, gre, ...
	Port  int    // destination port; 0 for none (gre)
}

// Redirect forwards a protocol, and port, to a LAN host.
type Redirect struct {
	Name  string
	Proto string
	Port  int    // 0 for none (gre)
	To    string // the LAN host's IPv4 address
}

// hookGap stands for a hook with nothing to include; Render removes the line
// it sits on so an unused hook leaves no blank line.
const hookGap = "\x00"

// Render returns the ruleset for c as nft -f input. Include files are
// referenced by absolute path, as fw4 does. An include whose chain has no
// place in the ruleset is an error (fw4 would drop it silently).
func Render(c Config) (string, error) {
	if c.LAN == "" || c.WAN == "" {
		return "", errors.New("fw4: LAN and WAN devices are required")
	}
	inc, err := findIncludes(c.Includes)
	if err != nil {
		return "", err
	}
	placed := map[string]bool{}
	splice := func(key, indent string) string {
		placed[key] = true
		var b strings.Builder
		for _, path := range inc[key] {
			fmt.Fprintf(&b, "%sinclude %q\n", indent, path)
		}
		if b.Len() == 0 {
			return hookGap
		}
		return strings.TrimSuffix(b.String(), "\n")
	}
	funcs := template.FuncMap{
		"ruleset": func(pos string) string { return splice("ruleset-"+pos, "") },
		"table":   func(pos string) string { return splice("table-"+pos, "\t") },
		"pre":     func(chain string) string { return splice("chain-pre/"+chain, "\t\t") },
		"post":    func(chain string) string { return splice("chain-post/"+chain, "\t\t") },
	}
	tmpl, err := template.New("ruleset").Funcs(funcs).Parse(rulesetText)
	if err != nil {
		return "", fmt.Errorf("fw4: %w", err)
	}
	var b strings.Builder
	if err := tmpl.Execute(&b, c); err != nil {
		return "", fmt.Errorf("fw4: %w", err)
	}
	for key := range inc {
		if !placed[key] {
			return "", fmt.Errorf("fw4: includes in %s have no place in the ruleset", filepath.Join(c.Includes, key))
		}
	}
	return strings.ReplaceAll(b.String(), hookGap+"\n", ""), nil
}

// findIncludes maps each include position ("table-post",
// "chain-pre/forward", ...) to its *.nft files in dir, sorted by name as
// fw4's glob returns them.
func findIncludes(dir string) (map[string][]string, error) {
	inc := map[string][]string{}
	if dir == "" {
		return inc, nil
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("fw4: includes: %w", err)
	}
	for _, pattern := range []string{"ruleset-*/*.nft", "table-*/*.nft", "chain-*/*/*.nft"} {
		files, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			key, _ := filepath.Rel(dir, filepath.Dir(f))
			inc[filepath.ToSlash(key)] = append(inc[filepath.ToSlash(key)], f)
		}
	}
	for key := range inc {
		slices.Sort(inc[key])
	}
	return inc, nil
}
