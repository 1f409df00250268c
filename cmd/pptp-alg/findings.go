package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/pptp-alg/pptp-alg/cmd/pptp-alg/controlapi"
	"github.com/pptp-alg/pptp-alg/nat"
)

// What the rest of the router does to PPTP, in words: for the warning at
// start-up, for status, and for doctor.

// fixHelperFW4 is the fix when OpenWrt's fw4 assigns the kernel helper. It
// does so in chain helper_ZONE: to every zone without masquerading once
// kmod-nf-nathelper-extra has loaded nf_conntrack_pptp (auto_helper), and
// to zones whose helper list or helper rules name pptp.
const fixHelperFW4 = "remove kmod-nf-nathelper-extra, or in /etc/config/firewall set option auto_helper '0' " +
	"on the zone and name pptp in none of its helper lists or helper rules (list helper keeps the others), then run fw4 reload"

func helperFix(h nat.HelperRule) string {
	if zone, ok := strings.CutPrefix(h.Chain, "helper_"); ok && h.Table == "inet fw4" {
		return "fw4 assigns it to zone " + zone + ": " + fixHelperFW4
	}
	// A rule of fw4's elsewhere came from an include, not from its config.
	return fmt.Sprintf("delete the rule that sets ct helper \"pptp\" in %s chain %s (nft -a list chain %s %s shows its handle)",
		h.Table, h.Chain, h.Table, h.Chain)
}

// helperWhere names the rule's chain and the hooks it runs at:
// "inet fw4 chain helper_lan (prerouting priority 0)".
func helperWhere(h nat.HelperRule) string {
	where := h.Table + " chain " + h.Chain
	if len(h.From) == 0 {
		return where + " (reached from no base chain pptp-alg can follow)"
	}
	var from []string
	for _, b := range h.From {
		from = append(from, fmt.Sprintf("%s priority %d", b.Hook, b.Priority))
	}
	return where + " (" + strings.Join(from, ", ") + ")"
}

// helperEffect says what the assignment does to pptp-alg. Measured in the
// lab: an assignment in prerouting (fw4's, priority filter, tcp dport 1723)
// never lands on a relayed LAN connection, which relay_prerouting leaves
// untracked at priority raw.
// With the redirect, one in prerouting up to dstnat - 5 lands on them
// again. sees is h.SeesRelayedConnections.
func helperEffect(sees bool) string {
	if sees {
		return "it can land on relayed control connections, which pptp-alg then refuses: their tunnels fail"
	}
	return "it never sees the connections pptp-alg relays, so relayed tunnels work, but it carries PPTP while pptp-alg is " +
		"stopped or disabled; those tunnels outlive pptp-alg's start unless a relayed call takes one's call ID toward its server"
}

func helperUses(rs nat.Ruleset, redirect bool) []controlapi.HelperUse {
	uses := []controlapi.HelperUse{}
	for _, h := range rs.PPTPHelper {
		uses = append(uses, controlapi.HelperUse{Where: helperWhere(h), SeesRelayedConnections: h.SeesRelayedConnections(redirect), Fix: helperFix(h)})
	}
	return uses
}

// fw4Include is where the OpenWrt package puts the rule that accepts
// pptp-alg's GRE in fw4's forward chain.
const fw4Include = "/usr/share/nftables.d/chain-pre/forward/30-pptp-alg.nft"

// forwardFinding checks that every forward base chain passes untracked GRE:
// it has a rule accepting it, or its policy is accept.
func forwardFinding(rs nat.Ruleset) (ok bool, detail, fix string) {
	if len(rs.Forward) == 0 {
		return true, "no nftables chain filters forwarded IPv4", ""
	}
	var good, bad, fixes []string
	for _, f := range rs.Forward {
		name := f.Table + " " + f.Chain
		switch {
		case f.AcceptsUntrackedGRE:
			good = append(good, name+" accepts untracked GRE")
		case f.Policy == "accept":
			good = append(good, name+" has policy accept")
		default:
			bad = append(bad, name)
			if f.Table == "inet fw4" {
				fixes = append(fixes, "install pptp-alg's fw4 include as "+fw4Include+" and run fw4 reload")
			} else {
				fixes = append(fixes, "nft insert rule "+name+" meta l4proto gre ct state untracked accept")
			}
		}
	}
	if len(bad) > 0 {
		return false, strings.Join(bad, ", ") + " does not accept untracked GRE, which is how pptp-alg forwards it", strings.Join(fixes, "; ")
	}
	return true, strings.Join(good, ", "), ""
}

// openwrtPackage names the OpenWrt package that has each of nat.Features.
var openwrtPackage = map[string]string{
	"nftables": "kmod-nft-core",
	"maps with concatenated keys and counters": "kmod-nft-core",
	"notrack":       "kmod-nft-core",
	"nat chains":    "kmod-nft-nat",
	"redirect":      "kmod-nft-nat",
	"tproxy":        "kmod-nft-tproxy",
	"netdev family": "kmod-nft-netdev",
	"fwd":           "kmod-nft-netdev",
}

// lacks says what a failed probe found: "the kernel lacks nftables'
// redirect (no such file or directory)".
func lacks(f nat.Finding) string {
	name := "nftables' " + f.Name
	if f.Name == "nftables" {
		name = "nftables"
	}
	if denied(f.Err) {
		return "cannot ask the kernel for " + name + " (" + f.Err.Error() + ")"
	}
	if errors.Is(f.Err, os.ErrDeadlineExceeded) {
		return "the kernel did not say whether it has " + name + " (" + f.Err.Error() + ")"
	}
	return "the kernel lacks " + name + " (" + f.Err.Error() + ")"
}

// featureFix is the fix for a failed probe.
func featureFix(f nat.Finding) string {
	if denied(f.Err) {
		return fixRoot
	}
	fix := "load or build in " + f.Kernel
	if pkg := openwrtPackage[f.Name]; pkg != "" {
		fix += " (OpenWrt: " + pkg + ")"
	}
	return fix
}

// featureChecks are the doctor's two checks of the kernel's nftables: what
// the daemon cannot run without, and what its fast path needs.
func featureChecks(fs []nat.Finding) []check {
	req := check{name: "nftables features"}
	fast := check{name: "fast path features"}
	var reqOK, fastOK, reqBad, fastBad, reqFix, fastFix, without []string
	for _, f := range fs {
		if errors.Is(f.Err, nat.ErrNotTried) {
			continue // a consequence of another failure, reported there
		}
		if f.Optional && f.Err != nil {
			without = append(without, f.Name)
			continue
		}
		ok, bad, fix := &reqOK, &reqBad, &reqFix
		if f.FastPath {
			ok, bad, fix = &fastOK, &fastBad, &fastFix
		}
		if f.Err == nil {
			*ok = append(*ok, f.Name)
			continue
		}
		*bad = append(*bad, lacks(f))
		if fx := featureFix(f); !slices.Contains(*fix, fx) {
			*fix = append(*fix, fx)
		}
	}
	req.ok, fast.ok = len(reqBad) == 0, len(fastBad) == 0
	if req.ok {
		req.detail = strings.Join(reqOK, ", ")
		if slices.Contains(without, nat.FeatureOwner) {
			req.detail += "; " + flushResets
		}
	} else {
		req.detail, req.fix = strings.Join(reqBad, "; "), strings.Join(reqFix, "; ")
	}
	switch {
	case len(fastOK) == 0 && fast.ok:
		fast.ok, fast.detail, fast.fix = false, "not checked: nftables is missing", "see the nftables features check"
	case fast.ok:
		fast.detail = strings.Join(fastOK, ", ")
	default:
		fast.detail = strings.Join(fastBad, "; ") + ": GRE goes through the ip table and the firewall, more slowly"
		fast.fix = strings.Join(fastFix, "; ") + ", then restart pptp-alg"
	}
	return []check{req, fast}
}
