//go:build linux && (amd64 || arm64 || ppc64 || ppc64le || s390x)

package sigdisp

// kernelSigaction is the kernel's struct sigaction on architectures that
// define __ARCH_HAS_SA_RESTORER with a 64-bit sa_flags
// (include/linux/signal_types.h; the Go runtime's sigactiont in
// runtime/defs_linux_{amd64,arm64,ppc64,ppc64le,s390x}.go is the same).
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}
