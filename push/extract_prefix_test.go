package push

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExtractPrefixMatchesNothing: Extract fails when no entry is at or
// under the prefix, naming the prefix and the image's top-level
// directories (not its top-level files), and removes what it created; a
// prefix that is present, even holding only a directory, extracts.
func TestExtractPrefixMatchesNothing(t *testing.T) {
	img := exImage(t,
		exLayerOf(t, "tar", exTar(t, exDir("models"), exFile("models/a.bin", "x"), exFile("root.txt", "r"))),
		exLayerOf(t, "gzip", exTar(t, exFile("etc/conf", "y"))))
	dir := filepath.Join(t.TempDir(), "out")
	err := Extract(context.Background(), img, dir, ExtractOptions{Prefix: "/nonexist"})
	if err == nil {
		t.Fatal("Extract with a prefix the image lacks succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "/nonexist") || !strings.Contains(msg, "/etc, /models") || strings.Contains(msg, "root.txt") {
		t.Errorf("error %q", msg)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Extract left %s: %v", dir, err)
	}
	// Nested prefixes work as before.
	if err := Extract(context.Background(), img, dir, ExtractOptions{Prefix: "/etc"}); err != nil {
		t.Fatal(err)
	}
	exAssertTree(t, dir, map[string]string{"conf": "y"})
	// A prefix present only as a directory is not an error.
	onlyDir := exImage(t, exLayerOf(t, "tar", exTar(t, exDir("models"))))
	if err := Extract(context.Background(), onlyDir, filepath.Join(t.TempDir(), "d"), ExtractOptions{}); err != nil {
		t.Errorf("an empty model directory: %v", err)
	}
}
