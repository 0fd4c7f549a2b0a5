package benchenv

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Median of xs; NaN for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Cell is a table cell for figures over rounds: the median, then the
// min–max where f tells them apart; "—" for none.
func Cell(xs []float64, f func(float64) string) string {
	if len(xs) == 0 {
		return "—"
	}
	lo, hi := slices.Min(xs), slices.Max(xs)
	if f(lo) == f(hi) {
		return f(Median(xs))
	}
	return fmt.Sprintf("%s (%s–%s)", f(Median(xs)), f(lo), f(hi))
}

// Num formats x with prec decimals and thousands separators; "—" for NaN.
func Num(x float64, prec int) string {
	if math.IsNaN(x) {
		return "—"
	}
	s := fmt.Sprintf("%.*f", prec, x)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var b strings.Builder
	for i, r := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	out := b.String()
	if neg {
		out = "-" + out
	}
	if frac != "" {
		out += "." + frac
	}
	return out
}
