package standin

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/modelcar/modelcar/internal/mapped"
)

// mapWindow is how much of a weight file is mapped at a time, so resident
// memory stays bounded whatever the file size.
const mapWindow = 64 << 20

// touchAll reads f's first size bytes from read-only mappings of f, as
// safetensors' mmap does: every page faults in from the page cache, or
// from the disk when it is not cached. A file that cannot be mapped (some
// FUSE and network filesystems) is read through a buffer instead; one that
// shrinks while read is an error.
func touchAll(ctx context.Context, f *os.File, size int64) error {
	var s uint64
	for off := int64(0); off < size; off += mapWindow {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := unix.Mmap(int(f.Fd()), off, int(min(mapWindow, size-off)), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			if off == 0 {
				return readAll(ctx, f, size)
			}
			return fmt.Errorf("mapping at %d: %w", off, err)
		}
		if err := mapped.Use(m, func(m []byte) error { s += sum(m); return nil }); err != nil {
			return err
		}
	}
	sink.Add(s)
	return nil
}
