//go:build linux

// Package mapped owns reading files through read-only memory maps safely:
// a file truncated while mapped makes the next access of the lost pages
// fault, and Use turns that fault into ErrFault instead of a crash.
package mapped

import (
	"errors"
	"runtime/debug"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrFault is an access to a mapping whose file shrank under it.
var ErrFault = errors.New("fault reading a memory map: the file shrank while mapped")

// Use calls use with m, a mapping made by unix.Mmap, then unmaps m. A fault
// while use reads m returns ErrFault; any other panic goes on up (after
// the unmap).
func Use(m []byte, use func(m []byte) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			// Only a fault inside m is the file's doing; any other panic is a
			// bug.
			f, fault := r.(interface{ Addr() uintptr })
			base := uintptr(unsafe.Pointer(unsafe.SliceData(m)))
			if !fault || f.Addr() < base || f.Addr() >= base+uintptr(len(m)) {
				unix.Munmap(m)
				panic(r)
			}
			err = ErrFault
		}
		unix.Munmap(m)
	}()
	return use(m)
}
