package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestRowNumbers(t *testing.T) {
	text := "LAN client\tCall ID\tServer\tGRE out\n" +
		"192.168.1.11\t35200\t203.0.113.2\t0\t35200\tUp\t148 packets, 9.04 KiB\t71 packets, 4.39 KiB\t0h 1m 39s\n" +
		"192.168.1.12\t7\t203.0.113.2\n"
	for _, tc := range []struct {
		addr   string
		row    string
		nums   []int
		lo, hi int
		in     bool
	}{
		{"192.168.1.11", "192.168.1.11\t35200", []int{35200, 0, 35200, 148, 9, 4, 71, 4, 39, 0, 1, 39}, 70, 80, true},
		{"192.168.1.11", "", nil, 200, 300, false},
		{"192.168.1.12", "192.168.1.12\t7", []int{7}, 7, 7, true},
		{"192.168.1.99", "", nil, 0, 100, false},
	} {
		row, nums := rowNumbers(text, tc.addr)
		if tc.row != "" && (len(row) < len(tc.row) || row[:len(tc.row)] != tc.row) {
			t.Errorf("%s: row %q, want it to start with %q", tc.addr, row, tc.row)
		}
		if tc.nums != nil && !slices.Equal(nums, tc.nums) {
			t.Errorf("%s: numbers %v, want %v", tc.addr, nums, tc.nums)
		}
		if got := hasIn(nums, tc.lo, tc.hi); got != tc.in {
			t.Errorf("%s: hasIn(%d, %d) = %v, want %v", tc.addr, tc.lo, tc.hi, got, tc.in)
		}
	}
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		{"x\ny\n", "x\ny\n", ""},
		{"x\ny", "x\nz", "- y\n+ z"},
		{"x\ny", "y\nx", "(same lines, different order or bytes)"},
		{"x", "x\nx", "+ x"},
	} {
		if got := diff(tc.a, tc.b); got != tc.want {
			t.Errorf("diff(%q, %q) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestOnlyInclude(t *testing.T) {
	if !onlyInclude("+ \t\tmeta l4proto gre ct state untracked accept comment \"pptp-alg: GRE\"") {
		t.Error("the package's GRE include is not recognised")
	}
	if onlyInclude("- \t\tiifname \"br-lan\" jump input_lan\n+ \t\tmeta l4proto gre accept") {
		t.Error("a changed fw4 rule passed as the include")
	}
}

// TestReadIpk reads an .ipk laid out as scripts/openwrt-package.sh makes
// one: a gzipped tar of debian-binary, control.tar.gz and data.tar.gz.
func TestReadIpk(t *testing.T) {
	tgz := func(files map[string][]byte) []byte {
		var buf bytes.Buffer
		z := gzip.NewWriter(&buf)
		w := tar.NewWriter(z)
		for _, name := range slices.Sorted(maps.Keys(files)) {
			w.WriteHeader(&tar.Header{Name: "./" + name, Mode: 0o644, Size: int64(len(files[name])), Typeflag: tar.TypeReg})
			w.Write(files[name])
		}
		w.Close()
		z.Close()
		return buf.Bytes()
	}
	elf := append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 57)...)
	elf[18] = 62 // EM_X86_64
	file := filepath.Join(t.TempDir(), "p.ipk")
	outer := tgz(map[string][]byte{
		"debian-binary":  []byte("2.0\n"),
		"control.tar.gz": tgz(map[string][]byte{"control": []byte("Package: pptp-alg\n"), "postinst": []byte("default_postinst\n")}),
		"data.tar.gz":    tgz(map[string][]byte{"usr/sbin/pptp-alg": elf, "etc/config/pptp-alg": []byte("config\n")}),
	})
	if err := os.WriteFile(file, outer, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := readIpk(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := sorted(p.files); !slices.Equal(got, []string{"/etc/config/pptp-alg", "/usr/sbin/pptp-alg"}) {
		t.Errorf("files %v", got)
	}
	if p.control != "Package: pptp-alg\n" || p.scripts["postinst"] != "default_postinst\n" {
		t.Errorf("control %q, postinst %q", p.control, p.scripts["postinst"])
	}
	if p.elfMachine != 62 || p.elf != "\x7fELF\x02\x01\x01" {
		t.Errorf("ELF header %q, machine %d", p.elf, p.elfMachine)
	}
	if err := os.WriteFile(file, tgz(map[string][]byte{"debian-binary": []byte("3.0\n")}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readIpk(file); err == nil {
		t.Error("an .ipk with debian-binary 3.0 was read")
	}
}
