package ocilayout

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// A preallocated blob that gets fewer bytes than reserved holds exactly the
// bytes written: the reservation never shows as content.
func TestPreallocateKeepsWrittenSize(t *testing.T) {
	l, err := Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := l.NewBlob()
	if err != nil {
		t.Fatal(err)
	}
	w.Preallocate(8 << 20)
	data := bytes.Repeat([]byte("modelcar"), 100<<10) // 800 KiB
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	h, err := w.Commit(v1.Hash{})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if h.Hex != hex.EncodeToString(sum[:]) {
		t.Fatalf("digest %s", h)
	}
	st, err := os.Stat(l.BlobPath(h))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(len(data)) {
		t.Fatalf("blob is %d bytes on disk, %d written", st.Size(), len(data))
	}
	b, err := l.ReadBlob(h, 1<<20)
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read back: %v", err)
	}
}
