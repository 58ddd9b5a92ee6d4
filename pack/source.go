package pack

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// SourceFile is one regular file of a model directory, as pack will store it.
type SourceFile struct {
	// Rel is the slash-separated path relative to the model directory,
	// for example "config.json" or "tokenizer/vocab.txt".
	Rel string
	// Path is the path to open: symlinks (such as a Hugging Face cache
	// snapshot's links into ../../blobs) are already resolved.
	Path string
	// Size, Mode and ModTime describe the resolved regular file.
	Size    int64
	Mode    fs.FileMode
	ModTime time.Time
	// Dev and Ino identify the resolved file for the digest cache.
	Dev, Ino uint64
}

// open opens the file Scan listed and checks it is still that file: a
// regular file (opened without following a symlink put in its place, and
// without blocking on a FIFO) with the device, inode and size Scan saw. So
// a link swapped in after the scan is never followed out of the model.
func (f *SourceFile) open() (*os.File, error) {
	fh, err := os.OpenFile(f.Path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	st, err := fh.Stat()
	if err == nil {
		err = f.same(st)
	}
	if err != nil {
		fh.Close()
		return nil, err
	}
	return fh, nil
}

// same says how st differs from the file Scan listed, if it does.
func (f *SourceFile) same(st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is now a %s, not the regular file scanned", f.Path, describeMode(st.Mode()))
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && f.Ino != 0 && (uint64(sys.Dev) != f.Dev || sys.Ino != f.Ino) {
		return fmt.Errorf("%s was replaced by another file while packing", f.Path)
	}
	if st.Size() != f.Size {
		return fmt.Errorf("file changed while packing: size %d, was %d", st.Size(), f.Size)
	}
	return nil
}
