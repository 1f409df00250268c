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
	"path"
)

func inflateTo(w io.Writer, b []byte) error {
	if !bytes.HasPrefix(b, []byte(magicDeflate)) {
		return errors.New("apk: not deflated")
	}
	_, err := io.Copy(w, flate.NewReader(bytes.NewReader(b[4:])))
	return err
}

// Read parses a package as apk-tools does for an unsigned one and checks
// that every data block belongs to the file it names and matches its hash.
func Read(r io.Reader) (*Package, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(raw, []byte(magicDeflate)):
		if raw, err = io.ReadAll(flate.NewReader(bytes.NewReader(raw[4:]))); err != nil {
			return nil, fmt.Errorf("apk: deflate: %w", err)
		}
	case bytes.HasPrefix(raw, []byte(magicADB)):
	default:
		return nil, errors.New("apk: not an ADB file")
	}
	if len(raw) < 8 || string(raw[:4]) != magicADB || string(raw[4:8]) != schemaPkg {
		return nil, errors.New("apk: not a package (schema pckg)")
	}
	var (
		db    *reader
		p     *Package
		next  int // index into p.Files of the next file that has data
		blobs = raw[8:]
	)
	for len(blobs) > 0 {
		if len(blobs) < 4 {
			return nil, errors.New("apk: truncated block")
		}
		word := binary.LittleEndian.Uint32(blobs)
		typ, size := word>>30, int(word&(1<<30-1))
		if typ == blockExt || size < 4 || size > len(blobs) {
			return nil, fmt.Errorf("apk: bad block header %#x", word)
		}
		payload := blobs[4:size]
		padded := (size + 7) &^ 7
		if padded > len(blobs) {
			padded = len(blobs)
		}
		blobs = blobs[padded:]
		switch {
		case typ == blockADB && db == nil:
			db = &reader{buf: payload}
			if p, err = db.pkg(); err != nil {
				return nil, err
			}
		case typ == blockSig && db != nil:
		case typ == blockData && db != nil:
			for next < len(p.Files) && (p.Files[next].Dir || p.Files[next].Size == 0) {
				next++
			}
			if next == len(p.Files) || len(payload) < 8 {
				return nil, errors.New("apk: data block for no file")
			}
			f := &p.Files[next]
			pi, fi := binary.LittleEndian.Uint32(payload), binary.LittleEndian.Uint32(payload[4:])
			if want := db.index[next]; pi != want[0] || fi != want[1] || int64(len(payload)-8) != f.Size {
				return nil, fmt.Errorf("apk: data block %d/%d does not match %s", pi, fi, f.Path)
			}
			f.Data = payload[8:]
			if sha256.Sum256(f.Data) != f.Hash {
				return nil, fmt.Errorf("apk: %s: hash mismatch", f.Path)
			}
			next++
		default:
			return nil, fmt.Errorf("apk: block type %d out of order", typ)
		}
	}
	if p == nil {
		return nil, errors.New("apk: no ADB block")
	}
	for _, f := range p.Files[next:] {
		if !f.Dir && f.Size > 0 {
			return nil, fmt.Errorf("apk: no data for %s", f.Path)
		}
	}
	return p, nil
}

type reader struct {
	buf   []byte
	index [][2]uint32 // path and file index of each of Package.Files
}

func (r *reader) deref(v uint32, n int) ([]byte, error) {
	off := int(v & valueMask)
	if off+n > len(r.buf) {
		return nil, fmt.Errorf("apk: value %#x out of range", v)
	}
	return r.buf[off : off+n], nil
}

func (r *reader) int(v uint32) (uint64, error) {
	switch v & typeMask {
	case typeSpecial:
		return 0, nil
	case typeInt:
		return uint64(v & valueMask), nil
	case typeInt32:
		b, err := r.deref(v, 4)
		if err != nil {
			return 0, err
		}
		return uint64(binary.LittleEndian.Uint32(b)), nil
	case typeInt64:
		b, err := r.deref(v, 8)
		if err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint64(b), nil
	}
	return 0, fmt.Errorf("apk: value %#x is not an integer", v)
}

func (r *reader) blob(v uint32) ([]byte, error) {
	var n, hdr int
	switch v & typeMask {
	case typeSpecial:
		return nil, nil
	case typeBlob8:
		b, err := r.deref(v, 1)
		if err != nil {
			return nil, err
		}
		n, hdr = int(b[0]), 1
	case typeBlob16:
		b, err := r.deref(v, 2)
		if err != nil {
			return nil, err
		}
		n, hdr = int(binary.LittleEndian.Uint16(b)), 2
	case typeBlob32:
		b, err := r.deref(v, 4)
		if err != nil {
			return nil, err
		}
		n, hdr = int(binary.LittleEndian.Uint32(b)), 4
	default:
		return nil, fmt.Errorf("apk: value %#x is not a blob", v)
	}
	b, err := r.deref(v, hdr+n)
	if err != nil {
		return nil, err
	}
	return b[hdr:], nil
}

func (r *reader) str(v uint32) string {
	b, _ := r.blob(v)
	return string(b)
}

// slots returns an object's or array's slots, slot 0 included; a null
// value reads as an empty object.
func (r *reader) slots(v uint32) ([]uint32, error) {
	if v == typeSpecial {
		return []uint32{1}, nil
	}
	if t := v & typeMask; t != typeObject && t != typeArray {
		return nil, fmt.Errorf("apk: value %#x is not an object", v)
	}
	if v&valueMask%4 != 0 {
		return nil, fmt.Errorf("apk: object %#x is not aligned", v)
	}
	b, err := r.deref(v, 4)
	if err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n < 1 {
		return nil, fmt.Errorf("apk: object %#x is empty", v)
	}
	if b, err = r.deref(v, 4*n); err != nil {
		return nil, err
	}
	s := make([]uint32, n)
	for i := range s {
		s[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return s, nil
}

func field(s []uint32, i int) uint32 {
	if i < len(s) {
		return s[i]
	}
	return typeSpecial
}

func (r *reader) pkg() (*Package, error) {
	if len(r.buf) < 8 || r.buf[0] != 0 {
		return nil, errors.New("apk: bad ADB header")
	}
	root, err := r.slots(binary.LittleEndian.Uint32(r.buf[4:]))
	if err != nil {
		return nil, err
	}
	pi, err := r.slots(field(root, pkgInfo))
	if err != nil {
		return nil, err
	}
	p := &Package{Scripts: map[string]string{}}
	p.Info = Info{
		Name: r.str(field(pi, piName)), Version: r.str(field(pi, piVersion)),
		Description: r.str(field(pi, piDescription)), Arch: r.str(field(pi, piArch)),
		License: r.str(field(pi, piLicense)), Origin: r.str(field(pi, piOrigin)),
		Maintainer: r.str(field(pi, piMaintainer)), URL: r.str(field(pi, piURL)),
	}
	if p.InstalledSize, err = r.int(field(pi, piInstalledSize)); err != nil {
		return nil, err
	}
	deps, err := r.slots(field(pi, piDepends))
	if err != nil {
		return nil, err
	}
	for _, d := range deps[1:] {
		ds, err := r.slots(d)
		if err != nil {
			return nil, err
		}
		p.Info.Depends = append(p.Info.Depends, r.str(field(ds, depName)))
	}
	scripts, err := r.slots(field(root, pkgScripts))
	if err != nil {
		return nil, err
	}
	for i, v := range scripts[1:] {
		if v != typeSpecial && i < len(ScriptNames) {
			p.Scripts[ScriptNames[i]] = r.str(v)
		}
	}
	paths, err := r.slots(field(root, pkgPaths))
	if err != nil {
		return nil, err
	}
	for pIdx, pv := range paths[1:] {
		ds, err := r.slots(pv)
		if err != nil {
			return nil, err
		}
		dirName := r.str(field(ds, diName))
		mode, err := r.mode(field(ds, diACL))
		if err != nil {
			return nil, err
		}
		if dirName != "" {
			p.Files = append(p.Files, File{Path: dirName, Dir: true, Mode: mode})
			r.index = append(r.index, [2]uint32{uint32(pIdx + 1), 0})
		}
		files, err := r.slots(field(ds, diFiles))
		if err != nil {
			return nil, err
		}
		for fIdx, fv := range files[1:] {
			fs, err := r.slots(fv)
			if err != nil {
				return nil, err
			}
			if field(fs, fiTarget) != typeSpecial {
				return nil, errors.New("apk: links and devices are not supported")
			}
			f := File{Path: path.Join(dirName, r.str(field(fs, fiName)))}
			if f.Mode, err = r.mode(field(fs, fiACL)); err != nil {
				return nil, err
			}
			size, err := r.int(field(fs, fiSize))
			if err != nil {
				return nil, err
			}
			mtime, err := r.int(field(fs, fiMtime))
			if err != nil {
				return nil, err
			}
			f.Size, f.Mtime = int64(size), int64(mtime)
			h, err := r.blob(field(fs, fiHashes))
			if err != nil || len(h) != sha256.Size {
				return nil, fmt.Errorf("apk: %s: want a SHA-256 hash", f.Path)
			}
			copy(f.Hash[:], h)
			p.Files = append(p.Files, f)
			r.index = append(r.index, [2]uint32{uint32(pIdx + 1), uint32(fIdx + 1)})
		}
	}
	return p, nil
}

func (r *reader) mode(acl uint32) (fs.FileMode, error) {
	s, err := r.slots(acl)
	if err != nil {
		return 0, err
	}
	m, err := r.int(field(s, aclMode))
	if u, g := r.str(field(s, aclUser)), r.str(field(s, aclGroup)); u != "root" || g != "root" {
		return 0, fmt.Errorf("apk: owner %s:%s, want root:root", u, g)
	}
	return fs.FileMode(m), err
}
