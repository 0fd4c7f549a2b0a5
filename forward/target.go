package forward

import (
	"errors"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// target is where the loop connects: one fixed address, or a host name
// looked up again for every dial (a compose service's address changes when
// its container is recreated).
type target struct {
	addr netip.AddrPort // an IP literal, when host is empty
	host string         // a name to look up
	port uint16
}

func parseTarget(s string) (target, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return target{}, err
	}
	n, err := net.LookupPort("tcp", port)
	if err != nil {
		return target{}, err
	}
	if host == "" {
		return target{}, errors.New("missing host")
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" {
		return target{addr: netip.AddrPortFrom(ip.Unmap(), uint16(n))}, nil
	}
	return target{host: host, port: uint16(n)}, nil
}

// rawSockaddr is a in connect(2)'s own form, made once for a fixed target
// (unix.Connect converts its argument on every call, and writes into it),
// and per dial for a looked-up address.
func rawSockaddr(a netip.AddrPort) (unsafe.Pointer, uintptr, int) {
	port := [2]byte{byte(a.Port() >> 8), byte(a.Port())} // network order
	if a.Addr().Is4() {
		r := &unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Addr().As4()}
		*(*[2]byte)(unsafe.Pointer(&r.Port)) = port
		return unsafe.Pointer(r), unix.SizeofSockaddrInet4, unix.AF_INET
	}
	r := &unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.Addr().As16()}
	*(*[2]byte)(unsafe.Pointer(&r.Port)) = port
	return unsafe.Pointer(r), unix.SizeofSockaddrInet6, unix.AF_INET6
}

// sockaddrString formats what getpeername(2) returned, for log lines.
func sockaddrString(sa unix.Sockaddr) string {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)).String()
	}
	return "?"
}

// peer is the remote address of socket fd, for log lines only.
func peer(fd int) string {
	sa, err := unix.Getpeername(fd)
	if err != nil {
		return "?"
	}
	return sockaddrString(sa)
}
