//go:build !(linux && (amd64 || arm64 || ppc64 || ppc64le || s390x || riscv64 || loong64))

package sigdisp

// The kernel's struct sigaction is not known for this GOOS/GOARCH (386 and
// arm have a 32-bit sa_flags, MIPS puts sa_flags first and a 128-bit mask
// after it): passing one of the layouts above would make rt_sigaction
// misread it. Add a layout_*.go for it, checked against the kernel's
// include/linux/signal_types.h and the Go runtime's defs_linux_GOARCH.go.
var _ = struct_sigaction_layout_unknown_for_this_GOARCH_see_internal_sigdisp
