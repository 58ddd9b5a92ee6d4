package ocilayout

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/modelcar/modelcar/internal/limits"
)

// A layout's or an archive's files are untrusted input like a registry's
// answers: index.json or oci-layout may be a symlink to /dev/zero, a huge
// file or a named pipe. Every file is opened without blocking (a pipe with
// no writer would block open(2) forever), checked to be a regular file
// (symlinks are followed, to a regular file only) before a byte is read,
// and JSON documents are read whole only within limits.MaxManifestBytes.

// NotRegularError is a layout or archive file that is not a regular file.
type NotRegularError struct {
	Path string
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	kind := "not a regular file"
	switch {
	case e.Mode&fs.ModeNamedPipe != 0:
		kind = "a named pipe, not a regular file"
	case e.Mode&fs.ModeDevice != 0:
		kind = "a device, not a regular file"
	case e.Mode&fs.ModeSocket != 0:
		kind = "a socket, not a regular file"
	case e.Mode.IsDir():
		kind = "a directory, not a regular file"
	}
	return fmt.Sprintf("%s is %s", e.Path, kind)
}

// openRegular opens path for reading without blocking and refuses it
// unless it is (or a symlink leads to) a regular file.
func openRegular(path string) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, &NotRegularError{Path: path, Mode: st.Mode()}
	}
	return f, st, nil
}

// readSmall reads the JSON document at path whole (what names it in
// errors), refusing one over limits.MaxManifestBytes before reading it.
func readSmall(path, what string) ([]byte, error) {
	f, st, err := openRegular(path)
	var nr *NotRegularError
	if errors.As(err, &nr) {
		return nil, err // it names the file
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	if st.Size() > limits.MaxManifestBytes {
		return nil, &limits.TooLargeError{What: what, Size: st.Size(), Limit: limits.MaxManifestBytes}
	}
	// The file may grow while it is read: the limit holds all the same.
	b, err := io.ReadAll(io.LimitReader(f, limits.MaxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(b) > limits.MaxManifestBytes {
		return nil, &limits.TooLargeError{What: what, Size: -1, Limit: limits.MaxManifestBytes}
	}
	return b, nil
}
