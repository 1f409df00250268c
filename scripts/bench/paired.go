package main

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Paired alternation. On a shared VM the background load moves a single
// sample by more than the setups differ, and it drifts over seconds. So the
// setups compared exist at once, each in its own lab, and take turns
// sending short windows, many rounds: the windows of one round share the
// load of that moment, and ratios are taken within a round.

// sender sends one window of traffic through one setup and returns the
// packets per second that arrived right.
type sender func(window time.Duration) (float64, error)

// cell is one paired measurement: pps[r][i] is sender i's rate in round r,
// steal[r][i] the share of its window the hypervisor took CPU 0 away.
type cell struct {
	pps, steal [][]float64
}

// stealLimit is the share of a window stolen from the sending CPU beyond
// which the window counts as disturbed.
const stealLimit = 0.05

// alternate sends one warm-up window through each sender, then opt.reps
// rounds of one window each, in an order that rotates every round so that
// no sender always follows the same one. name is for progress lines.
func (b *bench) alternate(name string, senders []sender) (*cell, error) {
	w := b.opt.duration
	// Warm-up: neighbour entries, the conntrack entries the kernel
	// helper creates from its expectations, caches.
	for i, s := range senders {
		if _, err := s(w); err != nil {
			return nil, fmt.Errorf("%s: warm-up of %d: %w", name, i, err)
		}
	}
	c := &cell{}
	n := len(senders)
	for r := range b.opt.reps {
		pps, steal := make([]float64, n), make([]float64, n)
		for k := range n {
			i := (r + k) % n
			st0 := stolen(senderCPU)
			p, err := senders[i](w)
			if err != nil {
				return nil, fmt.Errorf("%s: round %d: %w", name, r+1, err)
			}
			pps[i] = p
			steal[i] = (stolen(senderCPU) - st0).Seconds() / w.Seconds()
		}
		c.pps = append(c.pps, pps)
		c.steal = append(c.steal, steal)
		if (r+1)%10 == 0 || r+1 == b.opt.reps {
			b.progress("%s: round %d/%d", name, r+1, b.opt.reps)
		}
	}
	dis, all := c.disturbed()
	b.log.Info("cell", "name", name, "pps", c.rates(), "rounds_kept", len(c.kept()), "disturbed_windows", dis, "windows", all)
	return c, nil
}

// disturbed counts the windows with more than stealLimit stolen, and all.
func (c *cell) disturbed() (n, all int) {
	for _, round := range c.steal {
		for _, s := range round {
			all++
			if s > stealLimit {
				n++
			}
		}
	}
	return n, all
}

// kept returns the indexes of the rounds the figures use: those without a
// disturbed window if they are at least half the rounds, else all.
func (c *cell) kept() []int {
	var clean, all []int
	for r, round := range c.steal {
		all = append(all, r)
		if slices.Max(round) <= stealLimit {
			clean = append(clean, r)
		}
	}
	if 2*len(clean) >= len(all) {
		return clean
	}
	return all
}

// rate is sender i's median over the kept rounds.
func (c *cell) rate(i int) float64 {
	var xs []float64
	for _, r := range c.kept() {
		xs = append(xs, c.pps[r][i])
	}
	if len(xs) == 0 {
		return 0
	}
	return median(xs)
}

func (c *cell) rates() []int {
	var ps []int
	for i := range c.pps[0] {
		ps = append(ps, int(c.rate(i)))
	}
	return ps
}

// ratios are sender a's rate over sender b's within each kept round.
func (c *cell) ratios(a, b int) []float64 {
	var qs []float64
	for _, r := range c.kept() {
		if c.pps[r][b] > 0 {
			qs = append(qs, c.pps[r][a]/c.pps[r][b])
		}
	}
	return qs
}

// ratio is the quartiles of ratios.
func (c *cell) ratio(a, b int) (q1, q2, q3 float64) { return quartiles(c.ratios(a, b)) }

// verdict says whether the median ratio of a to b is at least goal: "met"
// when the whole 95 % confidence interval of the median is, "missed" when
// none of it is, and "not decided" otherwise. It returns the interval too.
func (c *cell) verdict(a, b int, goal float64) (v string, lo, hi float64) {
	lo, hi, ok := medianCI(c.ratios(a, b))
	switch {
	case !ok:
		return "not decided", lo, hi
	case lo >= goal:
		return "met", lo, hi
	case hi < goal:
		return "missed", lo, hi
	}
	return "not decided", lo, hi
}

// medianCI is a 95 % confidence interval for the median of the population
// xs were drawn from, by order statistics: it assumes only that the rounds
// are independent, not any distribution of the noise. ok is false for
// fewer than 6 values, where no such interval reaches 95 %.
func medianCI(xs []float64) (lo, hi float64, ok bool) {
	n := len(xs)
	s := slices.Sorted(slices.Values(xs))
	// The largest k with P(Binomial(n, 1/2) < k) <= 2.5 %: the interval
	// from the k-th smallest to the k-th largest covers the median with at
	// least 95 %.
	k, cdf, pmf := 0, 0.0, math.Pow(0.5, float64(n))
	for i := 0; i < n; i++ {
		if cdf+pmf > 0.025 {
			break
		}
		cdf += pmf
		k = i + 1
		pmf = pmf * float64(n-i) / float64(i+1)
	}
	if k == 0 {
		if n == 0 {
			return 0, 0, false
		}
		return s[0], s[n-1], false
	}
	return s[k-1], s[n-k], true
}

// ratioText formats ratio as "0.97x (0.93–1.01)", the interquartile range
// in parentheses.
func (c *cell) ratioText(a, b int) string {
	if c == nil || len(c.pps) == 0 {
		return "-"
	}
	q1, q2, q3 := c.ratio(a, b)
	if len(c.kept()) < 2 {
		return fmt.Sprintf("%.2fx", q2)
	}
	return fmt.Sprintf("%.2fx (%.2f–%.2f)", q2, q1, q3)
}

// goalText is the verdict on goal and the median ratio with its interval,
// as "0.97x [0.95–0.99]".
func (c *cell) goalText(a, b int, goal float64) (verdict, text string) {
	v, lo, hi := c.verdict(a, b, goal)
	_, q, _ := c.ratio(a, b)
	return v, fmt.Sprintf("%.2fx [%.2f–%.2f]", q, lo, hi)
}

// keptText is "kept/all" rounds.
func (c *cell) keptText() string {
	if c == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", len(c.kept()), len(c.pps))
}

// quartiles of xs, interpolating between ranks; zeros for none.
func quartiles(xs []float64) (q1, q2, q3 float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	s := slices.Sorted(slices.Values(xs))
	q := func(p float64) float64 {
		x := p * float64(len(s)-1)
		i := int(x)
		if i+1 >= len(s) {
			return s[i]
		}
		return s[i] + (x-float64(i))*(s[i+1]-s[i])
	}
	return q(0.25), q(0.5), q(0.75)
}

// stolen returns the steal time of cpu so far, from /proc/stat (in
// USER_HZ ticks, 10 ms): time the hypervisor ran something else while
// this VM wanted the CPU.
func stolen(cpu int) time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	prefix := "cpu" + strconv.Itoa(cpu) + " "
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		// user nice system idle iowait irq softirq steal ...
		f := strings.Fields(rest)
		if len(f) < 8 {
			return 0
		}
		n, _ := strconv.ParseUint(f[7], 10, 64)
		return time.Duration(n) * time.Second / userHZ
	}
	return 0
}

// stealSummary says how many windows of cells were disturbed, for the
// report.
func stealSummary(cells []*cell) string {
	var dis, all, trimmed, n int
	for _, c := range cells {
		if c == nil {
			continue
		}
		n++
		d, a := c.disturbed()
		dis, all = dis+d, all+a
		if len(c.kept()) < len(c.pps) {
			trimmed++
		}
	}
	if all == 0 {
		return ""
	}
	return fmt.Sprintf("CPU %d steal (/proc/stat): %d of %d windows (%.1f %%) lost more than %.0f %% of the window to the hypervisor; "+
		"a cell leaves out the rounds holding such a window if at least half its rounds remain (%d of %d cells did).",
		senderCPU, dis, all, 100*float64(dis)/float64(all), 100*stealLimit, trimmed, n)
}
