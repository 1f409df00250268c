// Command mkapk writes an apk v3 package (OpenWrt 25.12 and later) from a
// directory tree, as `apk mkpkg` does, for scripts/openwrt-package.sh:
//
//	mkapk -files DIR -o FILE -name N -version V -arch A [-depends "a b"]
//	      [-script post-install:FILE ...] [-mtime UNIX] [other metadata]
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/pptp-alg/pptp-alg/scripts/firmware/apk"
)

type scriptFlag map[string]string

func (s scriptFlag) String() string { return "" }

func (s scriptFlag) Set(v string) error {
	name, file, ok := strings.Cut(v, ":")
	if !ok {
		return fmt.Errorf("want TYPE:FILE, got %q", v)
	}
	text, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	s[name] = string(text)
	return nil
}

func main() {
	var info apk.Info
	scripts := scriptFlag{}
	files := flag.String("files", "", "`directory` whose tree is the package's root (required)")
	out := flag.String("o", "", "output `file` (required)")
	depends := flag.String("depends", "", "space-separated package `names` it depends on")
	mtime := flag.Int64("mtime", 0, "modification `time` (Unix seconds) of every file")
	flag.StringVar(&info.Name, "name", "", "package `name` (required)")
	flag.StringVar(&info.Version, "version", "", "package `version`, e.g. 1.0.0-r1 (required)")
	flag.StringVar(&info.Arch, "arch", "", "package `arch`itecture, e.g. aarch64_cortex-a53 or noarch (required)")
	flag.StringVar(&info.Description, "description", "", "one-line `text`")
	flag.StringVar(&info.License, "license", "", "`SPDX` license")
	flag.StringVar(&info.Origin, "origin", "", "source package `name`")
	flag.StringVar(&info.Maintainer, "maintainer", "", "`who`")
	flag.StringVar(&info.URL, "url", "", "project `URL`")
	flag.Var(scripts, "script", "`TYPE:FILE`: a package script (post-install, pre-deinstall, ...); repeatable")
	flag.Parse()
	if *files == "" || *out == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	info.Depends = strings.Fields(*depends)
	var b bytes.Buffer
	if err := apk.Write(&b, info, os.DirFS(*files), scripts, *mtime); err != nil {
		fmt.Fprintln(os.Stderr, "mkapk:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, b.Bytes(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "mkapk:", err)
		os.Exit(1)
	}
}
