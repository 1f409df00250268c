package fw4

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// includes is the project's own fw4 include tree.
const includes = "../../firmware/openwrt/pptp-alg/files/usr/share/nftables.d"

func TestRenderPlacesIncludes(t *testing.T) {
	out, err := Render(Config{LAN: "br-lan", WAN: "wan", Includes: includes})
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(filepath.Join(includes, "chain-pre/forward/30-pptp-alg.nft"))
	want := "type filter hook forward priority filter; policy drop;\n\n" +
		"\t\tinclude \"" + abs + "\"\n" +
		"\t\tct state vmap"
	if !strings.Contains(out, want) {
		t.Fatalf("forward chain does not start with the include:\n%s", out)
	}
	if strings.Contains(out, "ct helper") {
		t.Fatal("helper rendered without PPTPHelper")
	}
}

func TestRenderHelper(t *testing.T) {
	out, err := Render(Config{LAN: "br-lan", WAN: "wan", PPTPHelper: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`type "pptp" protocol tcp;`, `tcp dport 1723 ct helper set "pptp"`, `iifname "br-lan" jump helper_lan`} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
	if strings.Contains(out, "include") {
		t.Error("includes rendered without Includes")
	}
}

func TestRenderRejectsUnplacedInclude(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "chain-pre/no_such_chain"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "chain-pre/no_such_chain/x.nft"), []byte("accept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Render(Config{LAN: "br-lan", WAN: "wan", Includes: dir}); err == nil {
		t.Fatal("Render accepted an include for a chain the ruleset lacks")
	}
}

// TestRulesetLoads has nft check the rendered ruleset (nft -c parses and
// validates against the kernel without changing anything). It needs root.
func TestRulesetLoads(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nft -c needs root (CAP_NET_ADMIN)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
	for _, helper := range []bool{false, true} {
		out, err := Render(Config{LAN: "br-lan", WAN: "wan", PPTPHelper: helper, Includes: includes})
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "ruleset.nft")
		if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		if msg, err := exec.Command("nft", "-c", "-f", f).CombinedOutput(); err != nil {
			t.Fatalf("helper=%v: nft -c: %v\n%s\n%s", helper, err, msg, out)
		}
	}
}

// TestRenderPortForward renders two `config redirect` sections (tcp/1723
// and proto gre to a LAN host) and the admin's WAN input rules as fw4 does.
func TestRenderPortForward(t *testing.T) {
	c := Config{LAN: "br-lan", WAN: "wan",
		WANInput:  []Rule{{Name: "Allow-PPTP", Proto: "tcp", Port: 1723}, {Name: "Allow-GRE", Proto: "gre"}},
		Redirects: []Redirect{{Name: "PPTP", Proto: "tcp", Port: 1723, To: "192.168.77.13"}, {Name: "GRE", Proto: "gre", To: "192.168.77.13"}},
	}
	out, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`iifname "wan" jump dstnat_wan`,
		`meta nfproto ipv4 tcp dport 1723 counter dnat 192.168.77.13:1723 comment "lab-fw4: PPTP"`,
		`meta nfproto ipv4 meta l4proto gre counter dnat 192.168.77.13 comment "lab-fw4: GRE"`,
		"chain forward_wan {\n\t\tct status dnat accept",
		"chain input_wan {\n\t\tct status dnat accept",
		`tcp dport 1723 counter accept comment "lab-fw4: Allow-PPTP"`,
		`meta l4proto gre counter accept comment "lab-fw4: Allow-GRE"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("nft"); err == nil {
			f := filepath.Join(t.TempDir(), "ruleset.nft")
			if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			if msg, err := exec.Command("nft", "-c", "-f", f).CombinedOutput(); err != nil {
				t.Fatalf("nft -c: %v\n%s", err, msg)
			}
		}
	}
}
