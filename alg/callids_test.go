package alg

import "testing"

func TestCallIDSpaceKeepsClientIDWhenFree(t *testing.T) {
	var s callIDSpace
	for _, want := range []uint16{1, 7, 65535, 2} {
		got, ok := s.take(want)
		if !ok || got != want {
			t.Fatalf("take(%d) = %d, %v; want %d, true", want, got, ok, want)
		}
	}
}

func TestCallIDSpaceTranslatesOnCollision(t *testing.T) {
	var s callIDSpace
	seen := map[uint16]bool{}
	for i := range 100 {
		id, ok := s.take(1)
		if !ok {
			t.Fatalf("take #%d failed", i)
		}
		if id == 0 || seen[id] {
			t.Fatalf("take #%d = %d: zero or duplicate", i, id)
		}
		seen[id] = true
	}
}

func TestCallIDSpaceExhaustion(t *testing.T) {
	var s callIDSpace
	for i := range 65535 {
		id, ok := s.take(0)
		if !ok || id == 0 {
			t.Fatalf("take #%d = %d, %v", i, id, ok)
		}
	}
	if id, ok := s.take(5); ok {
		t.Fatalf("take on a full space = %d, want failure", id)
	}
	s.release(4242)
	if id, ok := s.take(1); !ok || id != 4242 {
		t.Fatalf("after release: take = %d, %v; want 4242", id, ok)
	}
	s.release(4242)
	s.release(4242) // releasing twice is harmless
	if s.n != 65534 {
		t.Fatalf("n = %d, want 65534", s.n)
	}
}

func TestCallIDSpaceDelaysReuse(t *testing.T) {
	var s callIDSpace
	a, _ := s.take(0)
	s.release(a)
	b, _ := s.take(0)
	if a == b {
		t.Fatalf("freed ID %d handed out again at once", a)
	}
}

func BenchmarkCallIDTakeRelease(b *testing.B) {
	var s callIDSpace
	for range 10000 { // a busy server
		s.take(0)
	}
	b.ReportAllocs()
	for b.Loop() {
		id, _ := s.take(1)
		s.release(id)
	}
}
