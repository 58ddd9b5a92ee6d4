package standin

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// TestReadStreamedReadsEveryByte: the streamer's readers (--load-format
// runai_streamer) together read every byte of a weight file once, as the
// mapping does, whatever the number of readers and however the size falls
// on chunk boundaries; a file shorter than its stated size is an error.
func TestReadStreamedReadsEveryByte(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int64{0, 7, streamChunk, 3*streamChunk + 12345} {
		path := filepath.Join(dir, "w")
		data := make([]byte, size)
		for i := 0; i+8 <= len(data); i += 8 {
			binary.LittleEndian.PutUint64(data[i:], uint64(i)*2654435761)
		}
		for i := len(data) &^ 7; i < len(data); i++ {
			data[i] = byte(i)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		want := sum(data)
		for _, streams := range []int{1, 2, 16} {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			before := sink.Load()
			var err2 error
			if streams == 1 {
				err2 = touchAll(context.Background(), f, size)
			} else {
				err2 = readStreamed(context.Background(), f, size, streams)
			}
			f.Close()
			if got := sink.Load() - before; err2 != nil || got != want {
				t.Errorf("size %d, %d streams: sum %d, %v; want %d", size, streams, got, err2, want)
			}
		}
		if size > 0 {
			f, _ := os.Open(path)
			if err := readStreamed(context.Background(), f, size+streamChunk, 4); err == nil {
				t.Errorf("size %d read as %d: no error", size, size+streamChunk)
			}
			f.Close()
		}
	}
}
