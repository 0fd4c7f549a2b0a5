package whatwgurl

import (
	"strconv"
	"sync"
	"unicode/utf8"
)

// idnaTable is idnaData as a map: each code point that UTS #46 (as Node
// applies it) maps to ASCII, with what it maps to; "" for ignored ones;
// DEL (forbidden in a host, so the parse fails) for printable code points
// that Node rejects in a host wherever they stand.
var idnaTable = sync.OnceValue(func() map[rune]string {
	m := make(map[rune]string, 1700)
	for s := idnaData; s != ""; {
		r, n := utf8.DecodeRuneInString(s)
		s = s[n:]
		i := 0
		for i < len(s) && s[i] < utf8.RuneSelf {
			i++
		}
		m[r], s = s[:i], s[i:]
	}
	return m
})

func idnaMap(r rune) (string, bool) {
	m, ok := idnaTable()[r]
	return m, ok
}

// labelRune reports whether a non-ASCII code point that idnaData does not
// list may stand in a label: Node accepts only printable ones (categories
// L, M, N, P, S) and the joiners ZWNJ and ZWJ (after a virama). The test
// checks this against Node for every code point.
func labelRune(r rune) bool {
	return strconv.IsPrint(r) || r == 0x200c || r == 0x200d
}

// validPunycodeLabel reports whether the part of an "xn--" label after the
// prefix decodes (RFC 3492) to a label UTS #46 could have produced: not
// empty, and no code point that mapping would have changed (ASCII upper
// case, mapped or ignored code points) or that is a control.
func validPunycodeLabel(s string) bool {
	out, ok := punycodeDecode(s)
	if !ok || len(out) == 0 {
		return false
	}
	for _, r := range out {
		if 'A' <= r && r <= 'Z' || r < ' ' || 0x7f <= r && r < 0xa0 {
			return false
		}
		if _, mapped := idnaMap(r); mapped || r >= utf8.RuneSelf && !labelRune(r) {
			return false
		}
	}
	return true
}

// punycodeDecode is RFC 3492's decoder, section 6.2.
func punycodeDecode(s string) ([]rune, bool) {
	const (
		base, tmin, tmax, skew, damp = 36, 1, 26, 38, 700
		maxRune                      = 0x10ffff
	)
	var out []rune
	start := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '-' {
			for j := 0; j < i; j++ {
				if s[j] >= utf8.RuneSelf {
					return nil, false
				}
				out = append(out, rune(s[j]))
			}
			start = i + 1
			break
		}
	}
	adapt := func(delta, points int, first bool) int {
		if first {
			delta /= damp
		} else {
			delta /= 2
		}
		delta += delta / points
		k := 0
		for delta > (base-tmin)*tmax/2 {
			delta /= base - tmin
			k += base
		}
		return k + (base-tmin+1)*delta/(delta+skew)
	}
	n, i, bias := 128, 0, 72
	for in := start; in < len(s); {
		oldi, w := i, 1
		for k := base; ; k += base {
			if in >= len(s) {
				return nil, false
			}
			c := s[in]
			in++
			var digit int
			switch {
			case 'a' <= c && c <= 'z':
				digit = int(c - 'a')
			case 'A' <= c && c <= 'Z':
				digit = int(c - 'A')
			case '0' <= c && c <= '9':
				digit = int(c-'0') + 26
			default:
				return nil, false
			}
			if digit > (maxRune*2-i)/w {
				return nil, false // the code point would be out of range
			}
			i += digit * w
			t := k - bias
			if t < tmin {
				t = tmin
			} else if t > tmax {
				t = tmax
			}
			if digit < t {
				break
			}
			w *= base - t
			if w > maxRune*2 {
				return nil, false
			}
		}
		bias = adapt(i-oldi, len(out)+1, oldi == 0)
		n += i / (len(out) + 1)
		i %= len(out) + 1
		if n > maxRune || 0xd800 <= n && n <= 0xdfff {
			return nil, false
		}
		out = append(out, 0)
		copy(out[i+1:], out[i:])
		out[i] = rune(n)
		i++
	}
	return out, true
}
