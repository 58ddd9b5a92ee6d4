package pack

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/modelcar/modelcar/internal/mapped"
)

// mapWindow is how much of a source file is mapped at a time. Each window
// is populated in one call and unmapped before the next, so resident memory
// stays at one window per job whatever the file size.
const mapWindow = 8 << 20

// copyMapped writes the first size bytes of f to w from read-only memory
// maps of f instead of read(2) into a buffer: the hash and the blob write
// then read the page cache directly, one copy of every byte fewer.
// Measured on the bench model: tar packs about 10% faster than with reads.
// mapped is false, with nothing written, when f cannot be mapped (some
// FUSE and network filesystems); the caller then reads it instead.
//
// A file truncated while mapped makes the next access fault; that fault
// is recovered (internal/mapped) and returned as errFileChanged instead of killing the
// process.
//
// at is where the file's first byte lands in w's output. Writes are cut at
// multiples of copyBufSize in that output, so after the first one every
// write starts on a page boundary of the blob (a tar header puts file data
// at 512 bytes past one): measured 2-4% faster than unaligned writes.
func copyMapped(w io.Writer, f *os.File, size, at int64) (n int64, mapped bool, err error) {
	if size == 0 {
		return 0, true, nil
	}
	for off := int64(0); off < size; off += mapWindow {
		m, merr := unix.Mmap(int(f.Fd()), off, int(min(mapWindow, size-off)), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
		if merr != nil {
			if off == 0 {
				return 0, false, nil
			}
			return n, true, fmt.Errorf("mapping %s at %d: %w", f.Name(), off, merr)
		}
		k, werr := writeWindow(w, m, at+off)
		n += k
		if werr != nil {
			return n, true, werr
		}
	}
	return n, true, nil
}

// writeWindow writes m, which lands at at in w's output, to w in pieces
// that end on multiples of copyBufSize there, and unmaps it, also when an
// access faults.
func writeWindow(w io.Writer, m []byte, at int64) (n int64, err error) {
	err = mapped.Use(m, func(m []byte) error {
		for off := 0; off < len(m); {
			end := min(off+copyBufSize-int((at+int64(off))%copyBufSize), len(m))
			k, err := w.Write(m[off:end])
			off = end
			n += int64(k)
			if errors.Is(err, unix.EFAULT) {
				// A write(2) from a mapping whose file shrank.
				return errFileChanged
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, mapped.ErrFault) {
		err = errFileChanged
	}
	return n, err
}
