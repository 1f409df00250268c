package alg

// callIDSpace hands out the call IDs one server sees from the router. Every
// LAN client's calls to that server reach it from the one WAN address, so
// the IDs must be unique per server, not per client.
type callIDSpace struct {
	used [65536 / 64]uint64
	n    int    // IDs in use
	next uint16 // where the search for a free ID starts
}

func (s *callIDSpace) inUse(id uint16) bool {
	return s.used[id/64]&(1<<(id%64)) != 0
}

func (s *callIDSpace) mark(id uint16) {
	s.used[id/64] |= 1 << (id % 64)
	s.n++
}

// take reserves a call ID. It keeps the client's own ID when no other call
// to the server holds it, so translation only happens on a collision. Call
// ID 0 is never handed out: some peers read it as "no call".
func (s *callIDSpace) take(want uint16) (uint16, bool) {
	if want != 0 && !s.inUse(want) {
		s.mark(want)
		return want, true
	}
	if s.n >= 65535 {
		return 0, false
	}
	// Scan a word at a time from the cursor; the cursor makes a freed ID
	// wait a full cycle before reuse, so late GRE for an old call cannot
	// land in a new one.
	id := s.next
	for range len(s.used) + 1 {
		w := s.used[id/64] | s.zeroMask(id/64)
		if w != ^uint64(0) {
			for bit := id % 64; bit < 64; bit++ {
				c := id/64*64 + bit
				if w&(1<<bit) == 0 {
					s.mark(c)
					s.next = c + 1
					return c, true
				}
			}
		}
		id = (id/64 + 1) * 64 // start of the next word; wraps to 0
	}
	return 0, false
}

// zeroMask hides call ID 0 from the scan.
func (s *callIDSpace) zeroMask(word uint16) uint64 {
	if word == 0 {
		return 1
	}
	return 0
}

func (s *callIDSpace) release(id uint16) {
	if s.inUse(id) {
		s.used[id/64] &^= 1 << (id % 64)
		s.n--
	}
}
