// Package whatwgurl parses http and https URLs as Node's `new URL` does, so
// that the shim derives a callback's destination (host, port, path) from an
// origin exactly as the Node server that makes the callback will. Node
// implements the WHATWG URL Standard (https://url.spec.whatwg.org/, through
// the ada library); this package follows the standard's basic URL parser,
// without a base URL, for the special schemes http and https.
//
// Typical use:
//
//	u, err := whatwgurl.Parse(os.Getenv("CONVEX_CLOUD_ORIGIN"))
//	// u.Kind, u.Addr, u.Host: what Node connects to; u.ConnectPort(): where.
//
// What it covers, as the standard does: leading and trailing C0 controls and
// spaces stripped, tabs and newlines removed anywhere, the scheme in any case,
// any number of slashes or backslashes (or none) after "http:", user info
// skipped up to the last "@", percent-decoding of the host, IPv4 numbers in
// decimal, octal (leading 0) and hex (0x) and with fewer than four parts
// (127.1, 2130706433), IPv6 literals including embedded IPv4, ports with
// leading zeros, the default port dropped, and the path with dot segments
// resolved and percent-encoded as Node 20 encodes it.
//
// What it does not: other schemes are reported (SchemeError) but not parsed;
// query and fragment are skipped. International domain names are mapped
// with the UTS #46 mappings that produce ASCII (fullwidth and mathematical
// digits and letters, circled numbers, ignored characters such as the soft
// hyphen; idnaData, generated from Node and checked against it code point by
// code point), so "１２７。０.０.①" is 127.0.0.1 here as in Node. Code points
// Node rejects wherever they stand in a host (controls, unassigned, line
// separators, and the printable ones idnaData lists) are rejected here. A
// label that stays non-ASCII after that is a public DNS name: it can never
// be an IP literal or "localhost". Node shows such labels as Punycode
// (xn--…); Host keeps them as Unicode, and ASCII reports false. Node's
// context rules (bidi, joiners, NFC) are not applied, so Parse accepts some
// labels as names that Node rejects; an xn-- label is accepted when its
// Punycode decodes to code points that could stand in a label, without the
// full UTS #46 validity checks. Either way such a host is a public name,
// never a local one.
//
// Why not a library: net/url is not WHATWG (it keeps "127.1" as a name and
// rejects backslashes); github.com/nlnwa/whatwg-url is a complete WHATWG
// parser, but it pulls in golang.org/x/net/idna and x/text (about 300 KB of
// the shim's 3 MiB binary budget, measured) for full IDNA, which deciding
// where a callback goes does not need.
package whatwgurl

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrInvalid is what Parse returns where Node's `new URL` throws.
var ErrInvalid = errors.New("not a valid URL")

// SchemeError is what Parse returns for a URL whose scheme is neither http
// nor https; Node may accept it (ftp://x, localhost:8080 with scheme
// "localhost"), but no HTTP callback goes there.
type SchemeError struct{ Scheme string }

func (e *SchemeError) Error() string {
	return "scheme " + strconv.Quote(e.Scheme) + " is not http or https"
}

// HostKind is what kind of host a URL names.
type HostKind uint8

const (
	Name HostKind = iota // a domain name, resolved when connecting
	IPv4                 // an IPv4 address in Addr
	IPv6                 // an IPv6 address in Addr
)

// URL is the part of a parsed URL that decides where a request goes.
type URL struct {
	Scheme string     // "http" or "https"
	Kind   HostKind   // what Host is
	Addr   netip.Addr // the address, for IPv4 and IPv6 hosts; IPv4-mapped IPv6 stays IPv6 (Node connects to it so)
	// Host is the host as Node's url.hostname shows it: a lower-case name,
	// dotted-decimal IPv4, or IPv6 in brackets, compressed as WHATWG does
	// (::ffff:7f00:1, not ::ffff:127.0.0.1).
	Host string
	// ASCII is false when a label of a Name host is not ASCII; Host then
	// has it in Unicode where Node shows Punycode.
	ASCII bool
	// Port is Node's url.port: "" for the scheme's default, else decimal
	// without leading zeros.
	Port string
	Path string // Node's url.pathname
}

// ConnectPort is the port a request to u goes to.
func (u URL) ConnectPort() int {
	if u.Port == "" {
		return defaultPort(u.Scheme)
	}
	n, _ := strconv.Atoi(u.Port)
	return n
}

// String is the URL without user info, query and fragment. Parsing it gives
// u again.
func (u URL) String() string {
	s := u.Scheme + "://" + u.Host
	if u.Port != "" {
		s += ":" + u.Port
	}
	return s + u.Path
}

func defaultPort(scheme string) int {
	if scheme == "https" {
		return 443
	}
	return 80
}

// Parse parses s as Node's `new URL(s)` would. It returns ErrInvalid where
// Node throws and *SchemeError for schemes other than http and https.
func Parse(s string) (URL, error) {
	s = strings.TrimFunc(s, func(r rune) bool { return r <= ' ' })
	if strings.ContainsAny(s, "\t\n\r") {
		b := make([]byte, 0, len(s))
		for i := 0; i < len(s); i++ {
			if c := s[i]; c != '\t' && c != '\n' && c != '\r' {
				b = append(b, c)
			}
		}
		s = string(b)
	}

	// Scheme: an ASCII letter, then letters, digits, "+", "-" or "."; with
	// no base URL, anything else before the first ":" is a failure.
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && (i == 0 || !isDigit(c) && c != '+' && c != '-' && c != '.') {
			break
		}
	}
	if i == 0 || i == len(s) || s[i] != ':' {
		return URL{}, ErrInvalid
	}
	u := URL{Scheme: strings.ToLower(s[:i]), ASCII: true}
	if u.Scheme != "http" && u.Scheme != "https" {
		return URL{}, &SchemeError{u.Scheme}
	}

	// Special schemes skip every "/" and "\" after the colon, so
	// "http:host", "http:/host" and "http:\\host" all name host.
	rest := strings.TrimLeft(s[i+1:], `/\`)
	end := strings.IndexAny(rest, `/?#\`)
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		authority = authority[at+1:] // user info: never looked at
	}

	host, port := authority, ""
	hasPort, inBrackets := false, false
	for j := 0; j < len(authority) && !hasPort; j++ {
		switch authority[j] {
		case '[':
			inBrackets = true
		case ']':
			inBrackets = false
		case ':':
			if !inBrackets {
				host, port, hasPort = authority[:j], authority[j+1:], true
			}
		}
	}
	if host == "" {
		return URL{}, ErrInvalid
	}
	if err := u.parseHost(host); err != nil {
		return URL{}, err
	}
	if hasPort && port != "" {
		n := 0
		for j := 0; j < len(port); j++ {
			if !isDigit(port[j]) {
				return URL{}, ErrInvalid
			}
			if n = n*10 + int(port[j]-'0'); n > 65535 {
				return URL{}, ErrInvalid
			}
		}
		if n != defaultPort(u.Scheme) {
			u.Port = strconv.Itoa(n)
		}
	}
	u.Path = parsePath(tail)
	return u, nil
}

// parseHost is the host parser for special schemes (not opaque).
func (u *URL) parseHost(h string) error {
	if h[0] == '[' {
		if len(h) < 2 || h[len(h)-1] != ']' {
			return ErrInvalid
		}
		a, ok := parseIPv6(h[1 : len(h)-1])
		if !ok {
			return ErrInvalid
		}
		u.Kind, u.Addr, u.Host = IPv6, a, "["+formatIPv6(a)+"]"
		return nil
	}
	domain := percentDecode(h)
	if !utf8.ValidString(domain) {
		return ErrInvalid // decodes to U+FFFD, which IDNA disallows
	}
	ascii, isASCII, ok := domainToASCII(domain)
	if !ok {
		return ErrInvalid
	}
	for j := 0; j < len(ascii); j++ {
		if isForbiddenDomain(ascii[j]) {
			return ErrInvalid
		}
	}
	if endsInANumber(ascii) {
		a, ok := parseIPv4(ascii)
		if !ok {
			return ErrInvalid
		}
		u.Kind, u.Addr, u.Host = IPv4, a, a.String()
		return nil
	}
	u.Kind, u.Host, u.ASCII = Name, ascii, isASCII
	return nil
}

func percentDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

// domainToASCII maps a domain as UTS #46 ToASCII does, as far as idnaMap
// knows: ASCII lower-cased, mapped code points replaced, ignored ones
// dropped, code points Node rejects refused, any other non-ASCII code
// point kept (isASCII false). An "xn--" label must decode as Punycode.
func domainToASCII(domain string) (out string, isASCII, ok bool) {
	isASCII = true
	var b strings.Builder
	for _, r := range domain {
		switch {
		case r < utf8.RuneSelf:
			b.WriteByte(lower(byte(r)))
		default:
			if m, mapped := idnaMap(r); mapped {
				b.WriteString(m)
			} else if !labelRune(r) {
				return "", false, false
			} else {
				b.WriteRune(r)
				isASCII = false
			}
		}
	}
	out = b.String()
	for _, label := range strings.Split(out, ".") {
		if strings.HasPrefix(label, "xn--") && !validPunycodeLabel(label[4:]) {
			return "", false, false
		}
	}
	return out, isASCII, out != ""
}

// endsInANumber is the standard's "ends in a number checker": the last
// label (ignoring one trailing dot) is decimal digits or an IPv4 number.
func endsInANumber(s string) bool {
	parts := strings.Split(s, ".")
	if parts[len(parts)-1] == "" {
		if len(parts) == 1 {
			return false
		}
		parts = parts[:len(parts)-1]
	}
	last := parts[len(parts)-1]
	if last != "" && strings.Trim(last, "0123456789") == "" {
		return true
	}
	_, ok := parseIPv4Number(last)
	return ok
}

// parseIPv4Number reads one part of an IPv4 host: decimal, octal after a
// leading "0", hex after "0x". Values are capped just above 2^32, which is
// out of range for any part.
func parseIPv4Number(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(s) >= 2 && (s[:2] == "0x" || s[:2] == "0X"):
		s, base = s[2:], 16
	case len(s) >= 2 && s[0] == '0':
		s, base = s[1:], 8
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		var d uint64
		switch {
		case isDigit(c):
			d = uint64(c - '0')
		case isHex(c):
			d = uint64(unhex(c))
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		if n = n*base + d; n > 1<<33 {
			n = 1 << 33
		}
	}
	return n, true
}

func parseIPv4(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if parts[len(parts)-1] == "" && len(parts) > 1 {
		parts = parts[:len(parts)-1]
	}
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var v uint64
	for i, p := range parts {
		n, ok := parseIPv4Number(p)
		if !ok {
			return netip.Addr{}, false
		}
		if i < len(parts)-1 {
			if n > 255 {
				return netip.Addr{}, false
			}
			v |= n << (8 * (3 - i))
			continue
		}
		if n >= 1<<(8*(5-len(parts))) {
			return netip.Addr{}, false
		}
		v += n
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv6 is the standard's IPv6 parser (stricter than netip in places:
// no zones; an embedded IPv4 part must be four decimal numbers without
// leading zeros).
func parseIPv6(s string) (netip.Addr, bool) {
	var a [8]uint16
	piece, compress := 0, -1
	p := 0
	at := func(i int) int { // -1 is EOF
		if i < len(s) {
			return int(s[i])
		}
		return -1
	}
	if at(p) == ':' {
		if at(p+1) != ':' {
			return netip.Addr{}, false
		}
		p += 2
		piece++
		compress = piece
	}
	for at(p) != -1 {
		if piece == 8 {
			return netip.Addr{}, false
		}
		if at(p) == ':' {
			if compress != -1 {
				return netip.Addr{}, false
			}
			p++
			piece++
			compress = piece
			continue
		}
		value, length := 0, 0
		for length < 4 && at(p) != -1 && isHex(byte(at(p))) {
			value = value*16 + int(unhex(byte(at(p))))
			p++
			length++
		}
		if at(p) == '.' {
			if length == 0 {
				return netip.Addr{}, false
			}
			p -= length
			if piece > 6 {
				return netip.Addr{}, false
			}
			seen := 0
			for at(p) != -1 {
				v4 := -1
				if seen > 0 {
					if at(p) != '.' || seen >= 4 {
						return netip.Addr{}, false
					}
					p++
				}
				if at(p) == -1 || !isDigit(byte(at(p))) {
					return netip.Addr{}, false
				}
				for at(p) != -1 && isDigit(byte(at(p))) {
					n := at(p) - '0'
					switch v4 {
					case -1:
						v4 = n
					case 0:
						return netip.Addr{}, false
					default:
						v4 = v4*10 + n
					}
					if v4 > 255 {
						return netip.Addr{}, false
					}
					p++
				}
				a[piece] = a[piece]*0x100 + uint16(v4)
				seen++
				if seen == 2 || seen == 4 {
					piece++
				}
			}
			if seen != 4 {
				return netip.Addr{}, false
			}
			break
		} else if at(p) == ':' {
			p++
			if at(p) == -1 {
				return netip.Addr{}, false
			}
		} else if at(p) != -1 {
			return netip.Addr{}, false
		}
		a[piece] = uint16(value)
		piece++
	}
	if compress != -1 {
		swaps := piece - compress
		piece = 7
		for piece != 0 && swaps > 0 {
			a[piece], a[compress+swaps-1] = a[compress+swaps-1], a[piece]
			piece--
			swaps--
		}
	} else if piece != 8 {
		return netip.Addr{}, false
	}
	var b [16]byte
	for i, v := range a {
		b[2*i], b[2*i+1] = byte(v>>8), byte(v)
	}
	return netip.AddrFrom16(b), true
}

// formatIPv6 is the standard's IPv6 serializer: the first longest run of
// two or more zero pieces compressed, hex in lower case, and (unlike
// netip) no dotted IPv4 tail.
func formatIPv6(a netip.Addr) string {
	b := a.As16()
	var pieces [8]uint16
	for i := range pieces {
		pieces[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	best, bestLen := -1, 1
	for i := 0; i < 8; {
		if pieces[i] != 0 {
			i++
			continue
		}
		j := i
		for j < 8 && pieces[j] == 0 {
			j++
		}
		if j-i > bestLen {
			best, bestLen = i, j-i
		}
		i = j
	}
	var sb strings.Builder
	for i := 0; i < 8; i++ {
		if i == best {
			if i == 0 {
				sb.WriteString("::")
			} else {
				sb.WriteByte(':')
			}
			i += bestLen - 1
			continue
		}
		sb.WriteString(strconv.FormatUint(uint64(pieces[i]), 16))
		if i != 7 {
			sb.WriteByte(':')
		}
	}
	return sb.String()
}

// parsePath is the path state for special URLs: "\" is "/", "." and ".."
// segments (also as %2e) are resolved, and code points Node 20 encodes in a
// path are percent-encoded. It stops at "?" or "#".
func parsePath(s string) string {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	if s != "" && (s[0] == '/' || s[0] == '\\') {
		s = s[1:]
	}
	segs := strings.Split(strings.ReplaceAll(s, `\`, "/"), "/")
	var path []string
	for i, seg := range segs {
		last := i == len(segs)-1
		switch {
		case isDoubleDot(seg):
			if len(path) > 0 {
				path = path[:len(path)-1]
			}
			if last {
				path = append(path, "")
			}
		case isSingleDot(seg):
			if last {
				path = append(path, "")
			}
		default:
			path = append(path, encodePathSegment(seg))
		}
	}
	return "/" + strings.Join(path, "/")
}

func isSingleDot(s string) bool { return s == "." || strings.EqualFold(s, "%2e") }

func isDoubleDot(s string) bool {
	switch strings.ToLower(s) {
	case "..", ".%2e", "%2e.", "%2e%2e":
		return true
	}
	return false
}

// encodePathSegment percent-encodes with Node 20's path set: C0 controls,
// space, ", #, <, >, ?, `, {, }, DEL and everything non-ASCII (as UTF-8;
// invalid UTF-8 as U+FFFD, which is what Node is given for it).
func encodePathSegment(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf && r > ' ' && r != 0x7f && !strings.ContainsRune("\"#<>?`{}", r) {
			b.WriteRune(r)
			continue
		}
		var buf [4]byte
		for _, c := range buf[:utf8.EncodeRune(buf[:], r)] {
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		}
	}
	return b.String()
}

// isForbiddenDomain: forbidden domain code points (ASCII ones; non-ASCII
// never are).
func isForbiddenDomain(c byte) bool {
	return c <= ' ' || c == 0x7f || strings.IndexByte("#%/:<>?@[\\]^|", c) >= 0
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isHex(c byte) bool   { return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }
func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func unhex(c byte) byte {
	switch {
	case isDigit(c):
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
