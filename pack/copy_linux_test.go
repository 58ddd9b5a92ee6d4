package pack

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCopyMappedCopiesEveryByte(t *testing.T) {
	for _, size := range []int64{1, copyBufSize - 1, mapWindow, mapWindow + 3*copyBufSize + 17} {
		data := make([]byte, size)
		rand.NewChaCha8([32]byte{byte(size)}).Read(data)
		path := filepath.Join(t.TempDir(), "shard")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		out := &startsWriter{at: 512}
		n, mapped, err := copyMapped(out, f, size, 512)
		f.Close()
		if err != nil || !mapped || n != size {
			t.Fatalf("size %d: copyMapped = %d, %v, %v", size, n, mapped, err)
		}
		if !bytes.Equal(out.buf.Bytes(), data) {
			t.Fatalf("size %d: copied bytes differ from the file", size)
		}
		for i, s := range out.starts[1:] {
			// Writes start aligned, or where a new window of the file
			// was mapped.
			if s%copyBufSize != 0 && (s-512)%mapWindow != 0 {
				t.Fatalf("size %d: write %d starts at %d in the output, not on a %d-byte boundary", size, i+1, s, copyBufSize)
			}
		}
	}
}

// startsWriter keeps what is written and where each write started, the
// output starting at at.
type startsWriter struct {
	buf    bytes.Buffer
	at     int64
	starts []int64
}

func (w *startsWriter) Write(p []byte) (int, error) {
	w.starts = append(w.starts, w.at+int64(w.buf.Len()))
	return w.buf.Write(p)
}

// shrinkingWriter truncates the source file on its first write, then reads
// every byte it is given, as the hash does.
type shrinkingWriter struct {
	path string
	sum  byte
	n    int
}

func (w *shrinkingWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		if err := os.Truncate(w.path, 0); err != nil {
			return 0, err
		}
	}
	w.n++
	for _, b := range p {
		w.sum ^= b
	}
	return len(p), nil
}

func TestCopyMappedFileShrinksWhileMapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shard")
	if err := os.WriteFile(path, bytes.Repeat([]byte{7}, 3*copyBufSize), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := &shrinkingWriter{path: path}
	n, mapped, err := copyMapped(w, f, 3*copyBufSize, 0)
	if !mapped || !errors.Is(err, errFileChanged) {
		t.Fatalf("copyMapped = %d, %v, %v; want errFileChanged", n, mapped, err)
	}
	if n >= 3*copyBufSize {
		t.Fatalf("copied %d bytes of a file truncated to 0", n)
	}
}

func TestPackFileShrinksWhilePacking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, 2*copyBufSize), 0o644); err != nil {
		t.Fatal(err)
	}
	ts, err := newTarStream([]tarEntry{{Name: "models/model.safetensors", File: SourceFile{Rel: "model.safetensors", Path: path, Size: 2 * copyBufSize}}}, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.open(); err != nil {
		t.Fatal(err)
	}
	defer ts.close()
	_, err = ts.WriteTo(&shrinkingWriter{path: path})
	var ie *InputError
	if !errors.As(err, &ie) || ie.File != "model.safetensors" {
		t.Fatalf("WriteTo error = %v; want an InputError naming model.safetensors", err)
	}
}

// panickingWriter fails like a bug in the writer chain would.
type panickingWriter struct{}

func (panickingWriter) Write(p []byte) (int, error) {
	var m map[string]int
	m["x"]++ // assignment to a nil map: a plain panic, not a fault
	return len(p), nil
}

func TestCopyMappedPassesOtherPanicsOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shard")
	if err := os.WriteFile(path, make([]byte, copyBufSize), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("a panic in the writer was swallowed")
		}
	}()
	copyMapped(panickingWriter{}, f, copyBufSize, 0)
}
