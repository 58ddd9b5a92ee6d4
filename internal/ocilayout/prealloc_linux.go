package ocilayout

import (
	"os"
	"syscall"
)

// fallocKeepSize is FALLOC_FL_KEEP_SIZE: reserve blocks without changing
// the file's size, so a blob never shows bytes that were not written.
const fallocKeepSize = 0x1

func preallocate(f *os.File, n int64) error {
	return syscall.Fallocate(int(f.Fd()), fallocKeepSize, 0, n)
}
