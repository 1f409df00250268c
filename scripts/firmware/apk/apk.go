// Package apk writes and reads apk v3 packages, the format of OpenWrt 25.12
// and later (apk-tools 3, "ADB"; see apk-tools doc/apk-v3.5.scd): a file
// header, one ADB block holding the package's metadata as a tree of tagged
// 32-bit values, and one DATA block per non-empty regular file, all
// deflate-compressed. It writes what `apk mkpkg` writes for a directory of
// plain files and directories, unsigned (install with --allow-untrusted);
// Read exists to test it.
package apk

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"
)

// Value tags: the high 4 bits are the type, the low 28 the value or offset.
const (
	typeSpecial = 0x0 << 28
	typeInt     = 0x1 << 28
	typeInt32   = 0x2 << 28
	typeInt64   = 0x3 << 28
	typeBlob8   = 0x8 << 28
	typeBlob16  = 0x9 << 28
	typeBlob32  = 0xa << 28
	typeArray   = 0xd << 28
	typeObject  = 0xe << 28
	typeMask    = 0xf << 28
	valueMask   = 1<<28 - 1
)

// Blocks: the high 2 bits of a block's first word are its type, the rest
// its size including that word; blocks are padded to 8 bytes.
const (
	blockADB  = 0
	blockSig  = 1
	blockData = 2
	blockExt  = 3
)

const (
	magicADB     = "ADB."
	magicDeflate = "ADBd"
	schemaPkg    = "pckg"
)

// Field numbers of the objects of the package schema (apk-tools apk_adb.h).
const (
	pkgInfo    = 1
	pkgPaths   = 2
	pkgScripts = 3

	piName          = 1
	piVersion       = 2
	piHashes        = 3
	piDescription   = 4
	piArch          = 5
	piLicense       = 6
	piOrigin        = 7
	piMaintainer    = 8
	piURL           = 9
	piInstalledSize = 12
	piDepends       = 15
	piMax           = 22

	depName = 1

	aclMode  = 1
	aclUser  = 2
	aclGroup = 3

	fiName   = 1
	fiACL    = 2
	fiSize   = 3
	fiMtime  = 4
	fiHashes = 5
	fiTarget = 6

	diName  = 1
	diACL   = 2
	diFiles = 3
)

// ScriptNames are the package scripts, in field order.
var ScriptNames = []string{"trigger", "pre-install", "post-install", "pre-deinstall",
	"post-deinstall", "pre-upgrade", "post-upgrade"}

// Info is a package's metadata.
type Info struct {
	Name, Version, Description, Arch string
	License, Origin, Maintainer, URL string
	Depends                          []string // package names
}

// File is one file or directory of a package. Paths have no leading slash.
type File struct {
	Path  string
	Dir   bool
	Mode  fs.FileMode // permission bits
	Size  int64
	Mtime int64
	Hash  [sha256.Size]byte
	Data  []byte
}

// Package is what Read returns.
type Package struct {
	Info          Info
	InstalledSize uint64
	Files         []File // directories and files, in package order
	Scripts       map[string]string
}

// Write writes the package of the files under root (regular files and
// directories only, owned by root) with the given scripts (keys from
// ScriptNames). Every file gets mtime.
func Write(w io.Writer, info Info, root fs.FS, scripts map[string]string, mtime int64) error {
	if info.Name == "" || info.Version == "" || info.Arch == "" {
		return errors.New("apk: name, version and arch are required")
	}
	dirs, err := scan(root)
	if err != nil {
		return err
	}
	a := newADB()
	var installed uint64
	paths := make([]uint32, 0, len(dirs))
	for _, d := range dirs {
		files := make([]uint32, 0, len(d.files))
		for _, f := range d.files {
			installed += uint64(f.Size)
			files = append(files, a.object(map[int]uint32{
				fiName:   a.blob([]byte(path.Base(f.Path))),
				fiACL:    a.acl(f.Mode),
				fiSize:   a.int(uint64(f.Size)),
				fiMtime:  a.int(uint64(mtime)),
				fiHashes: a.blob(f.Hash[:]),
			}))
		}
		name := d.path
		if name == "." {
			name = ""
		}
		paths = append(paths, a.object(map[int]uint32{
			diName:  a.blob([]byte(name)),
			diACL:   a.acl(0o755),
			diFiles: a.array(files),
		}))
	}
	if installed == 0 {
		installed = 1 // as apk mkpkg: 0 would read as "no size"
	}
	deps := slices.Clone(info.Depends)
	slices.Sort(deps)
	deps = slices.Compact(deps)
	depVals := make([]uint32, 0, len(deps))
	for _, d := range deps {
		depVals = append(depVals, a.object(map[int]uint32{depName: a.blob([]byte(d))}))
	}
	// The package's identity hash is the first 20 bytes of the SHA-256 of
	// the ADB block written with zeros in their place.
	idVal := a.blob(make([]byte, 20))
	pi := a.object(map[int]uint32{
		piName:          a.blob([]byte(info.Name)),
		piVersion:       a.blob([]byte(info.Version)),
		piHashes:        idVal,
		piDescription:   a.blob([]byte(info.Description)),
		piArch:          a.blob([]byte(info.Arch)),
		piLicense:       a.blob([]byte(info.License)),
		piOrigin:        a.blob([]byte(info.Origin)),
		piMaintainer:    a.blob([]byte(info.Maintainer)),
		piURL:           a.blob([]byte(info.URL)),
		piInstalledSize: a.int(installed),
		piDepends:       a.array(depVals),
	})
	fields := map[int]uint32{pkgInfo: pi, pkgPaths: a.array(paths)}
	if len(scripts) > 0 {
		sv := map[int]uint32{}
		for name, text := range scripts {
			i := slices.Index(ScriptNames, name)
			if i < 0 {
				return fmt.Errorf("apk: unknown script %q", name)
			}
			sv[i+1] = a.blob([]byte(text))
		}
		fields[pkgScripts] = a.object(sv)
	}
	binary.LittleEndian.PutUint32(a.buf[4:], a.object(fields))
	id := sha256.Sum256(a.buf)
	copy(a.buf[idVal&valueMask+1:], id[:20])

	var raw bytes.Buffer
	raw.WriteString(magicADB)
	raw.WriteString(schemaPkg)
	writeBlock(&raw, blockADB, a.buf)
	for pi, d := range dirs {
		for fi, f := range d.files {
			if f.Size == 0 {
				continue
			}
			var hdr [8]byte
			binary.LittleEndian.PutUint32(hdr[0:], uint32(pi+1))
			binary.LittleEndian.PutUint32(hdr[4:], uint32(fi+1))
			writeBlock(&raw, blockData, append(hdr[:], f.Data...))
		}
	}
	if _, err := io.WriteString(w, magicDeflate); err != nil {
		return err
	}
	zw, err := flate.NewWriter(w, flate.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return err
	}
	return zw.Close()
}

type dir struct {
	path  string
	files []File
}

// scan lists root's directories in apk's order (byte order, root first),
// each with its files in byte order, as the arrays of paths and files
// must be sorted.
func scan(root fs.FS) ([]dir, error) {
	byPath := map[string]*dir{}
	var order []string
	err := fs.WalkDir(root, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			byPath[p] = &dir{path: p}
			order = append(order, p)
		case e.Type().IsRegular():
			fi, err := e.Info()
			if err != nil {
				return err
			}
			data, err := fs.ReadFile(root, p)
			if err != nil {
				return err
			}
			d := byPath[path.Dir(p)]
			d.files = append(d.files, File{Path: p, Mode: fi.Mode().Perm(), Size: int64(len(data)),
				Hash: sha256.Sum256(data), Data: data})
		default:
			return fmt.Errorf("apk: %s: only regular files and directories are packaged", p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(order, func(a, b string) int {
		if a == "." {
			return -1
		}
		if b == "." {
			return 1
		}
		return strings.Compare(a, b)
	})
	dirs := make([]dir, 0, len(order))
	for _, p := range order {
		d := byPath[p]
		slices.SortFunc(d.files, func(a, b File) int { return strings.Compare(path.Base(a.Path), path.Base(b.Path)) })
		dirs = append(dirs, *d)
	}
	return dirs, nil
}

func writeBlock(b *bytes.Buffer, typ uint32, payload []byte) {
	var hdr [4]byte
	size := 4 + len(payload)
	binary.LittleEndian.PutUint32(hdr[:], typ<<30|uint32(size))
	b.Write(hdr[:])
	b.Write(payload)
	for ; size%8 != 0; size++ {
		b.WriteByte(0)
	}
}

// adb builds an ADB block: an 8-byte header (compat version 0, version 0,
// reserved, root value) and the values, each aligned to its size word.
type adb struct{ buf []byte }

func newADB() *adb { return &adb{buf: make([]byte, 8)} }

func (a *adb) align(n int) uint32 {
	for len(a.buf)%n != 0 {
		a.buf = append(a.buf, 0)
	}
	return uint32(len(a.buf))
}

// blob stores b with a length prefix of 1, 2 or 4 bytes; empty is null.
func (a *adb) blob(b []byte) uint32 {
	var off uint32
	switch n := len(b); {
	case n == 0:
		return typeSpecial
	case n <= 0xff:
		off = a.align(1)
		a.buf = append(a.buf, byte(n))
		off |= typeBlob8
	case n <= 0xffff:
		off = a.align(2)
		a.buf = binary.LittleEndian.AppendUint16(a.buf, uint16(n))
		off |= typeBlob16
	default:
		off = a.align(4)
		a.buf = binary.LittleEndian.AppendUint32(a.buf, uint32(n))
		off |= typeBlob32
	}
	a.buf = append(a.buf, b...)
	return off
}

func (a *adb) int(v uint64) uint32 {
	switch {
	case v <= valueMask:
		return typeInt | uint32(v)
	case v <= 0xffffffff:
		off := a.align(4)
		a.buf = binary.LittleEndian.AppendUint32(a.buf, uint32(v))
		return typeInt32 | off
	default:
		off := a.align(4)
		a.buf = binary.LittleEndian.AppendUint64(a.buf, v)
		return typeInt64 | off
	}
}

// slots stores an object or array: slot 0 holds the number of slots, and
// trailing nulls are left out; one with nothing in it is null.
func (a *adb) slots(typ uint32, vals []uint32) uint32 {
	n := len(vals)
	for n > 1 && vals[n-1] == typeSpecial {
		n--
	}
	if n <= 1 {
		return typeSpecial
	}
	off := a.align(4)
	a.buf = binary.LittleEndian.AppendUint32(a.buf, uint32(n))
	for _, v := range vals[1:n] {
		a.buf = binary.LittleEndian.AppendUint32(a.buf, v)
	}
	return typ | off
}

func (a *adb) object(fields map[int]uint32) uint32 {
	vals := make([]uint32, 1+slices.Max(slices.Collect(maps.Keys(fields))))
	for i, v := range fields {
		vals[i] = v
	}
	return a.slots(typeObject, vals)
}

func (a *adb) array(items []uint32) uint32 {
	return a.slots(typeArray, append([]uint32{0}, items...))
}

func (a *adb) acl(mode fs.FileMode) uint32 {
	return a.object(map[int]uint32{
		aclMode:  a.int(uint64(mode.Perm())),
		aclUser:  a.blob([]byte("root")),
		aclGroup: a.blob([]byte("root")),
	})
}
