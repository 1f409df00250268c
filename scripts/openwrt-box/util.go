package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// diff returns the lines only in a ("- ") and only in b ("+ "), in order of
// appearance; "" when the texts have the same lines.
func diff(a, b string) string {
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	ca, cb := count(a), count(b)
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if cb[l] > 0 {
			cb[l]--
			continue
		}
		out = append(out, "- "+l)
	}
	cb = count(b)
	for _, l := range strings.Split(b, "\n") {
		if ca[l] > 0 {
			ca[l]--
			continue
		}
		out = append(out, "+ "+l)
	}
	if len(out) == 0 && a != b {
		return "(same lines, different order or bytes)"
	}
	return strings.Join(out, "\n")
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return s
}

// ipk is what checkIpk reads of an .ipk: the data files, the control file
// and scripts, and the daemon's ELF header.
type ipk struct {
	files      []string          // absolute paths of regular files in data.tar.gz
	control    string            // the control file
	scripts    map[string]string // postinst, prerm, conffiles
	elf        string            // the first bytes of usr/sbin/pptp-alg
	elfMachine uint16
}

// readIpk reads an .ipk as opkg does: a gzipped tar of debian-binary,
// data.tar.gz and control.tar.gz.
func readIpk(file string) (*ipk, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	outer, err := untar(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if strings.TrimSpace(string(outer["debian-binary"])) != "2.0" {
		return nil, fmt.Errorf("%s: debian-binary is %q, want 2.0", file, outer["debian-binary"])
	}
	p := &ipk{scripts: map[string]string{}}
	control, err := untar(bytes.NewReader(outer["control.tar.gz"]))
	if err != nil {
		return nil, fmt.Errorf("%s: control.tar.gz: %w", file, err)
	}
	p.control = string(control["control"])
	for _, s := range []string{"postinst", "prerm", "conffiles"} {
		p.scripts[s] = string(control[s])
	}
	data, err := untar(bytes.NewReader(outer["data.tar.gz"]))
	if err != nil {
		return nil, fmt.Errorf("%s: data.tar.gz: %w", file, err)
	}
	for name, b := range data {
		p.files = append(p.files, "/"+name)
		if name == "usr/sbin/pptp-alg" && len(b) > 20 {
			p.elf = string(b[:7])
			p.elfMachine = binary.LittleEndian.Uint16(b[18:20])
		}
	}
	return p, nil
}

// untar reads a gzipped tar into a map of its regular files by clean path.
func untar(r io.Reader) (map[string][]byte, error) {
	z, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	t := tar.NewReader(z)
	files := map[string][]byte{}
	for {
		h, err := t.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(t)
		if err != nil {
			return nil, err
		}
		files[path.Clean(strings.TrimPrefix(h.Name, "./"))] = b
	}
}
