//go:build linux && (riscv64 || loong64)

package sigdisp

// kernelSigaction is the kernel's struct sigaction on architectures without
// sa_restorer (asm-generic; the Go runtime's sigactiont in
// runtime/defs_linux_{riscv64,loong64}.go, less the field it appends for
// its own use).
type kernelSigaction struct {
	handler uintptr
	flags   uint64
	mask    uint64
}
