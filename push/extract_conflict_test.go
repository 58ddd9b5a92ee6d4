package push

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestExtractHostileCrossLayerConflict: a later layer puts a symlink (or
// file) where an earlier layer, read at the same time, makes a directory. The
// refusal names the layer and the path, not a raw "renameat ...".
func TestExtractHostileCrossLayerConflict(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first exEntry
	}{
		{"symlink", exSymlink("models/a", "sub")},
		{"file", exFile("models/a", "a")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l1 := exTar(t, exDir("models/sub/"), exFile("models/a/b", "b"))
			l2 := exTar(t, tc.first)
			img := exImage(t, exLayerOf(t, "tar", l1), exLayerOf(t, "tar", l2))
			img = exWrapLayers(t, img, func(j int, l v1.Layer) v1.Layer {
				return &exHookLayer{Layer: l, delay: time.Duration(1-j) * 100 * time.Millisecond}
			})
			target := filepath.Join(t.TempDir(), "out")
			err := Extract(context.Background(), img, target, ExtractOptions{Jobs: 2})
			if err == nil {
				t.Fatal("Extract succeeded")
			}
			msg := err.Error()
			if strings.Contains(msg, "renameat") || !strings.Contains(msg, "layer 2/2") || !strings.Contains(msg, `"a"`) || !strings.Contains(msg, "conflict") {
				t.Errorf("error %q: want the layer, the path and the conflict, not a raw renameat", msg)
			}
			t.Logf("FAULT name=untrusted/pull-cross-layer-%s-over-dir/pull outcome=failed-clearly bytes_lost=0", tc.name)
		})
	}
}

// TestExtractHostileLongComponent: a name with a component over NAME_MAX
// (255 bytes) is refused while the layer is read, before any of its files
// is renamed into place; it failed at the rename, after the files before
// it had taken their names.
func TestExtractHostileLongComponent(t *testing.T) {
	long := "models/evil-" + strings.Repeat("c", 300)
	img := exImage(t, exLayerOf(t, "tar", exTar(t, exFile("models/ok", "ok"), exFile(long, "evil"))))
	target := filepath.Join(t.TempDir(), "out")
	err := Extract(context.Background(), img, target, ExtractOptions{Jobs: 1})
	if err == nil || !strings.Contains(err.Error(), "255-byte limit (NAME_MAX)") || strings.Contains(err.Error(), "renameat") {
		t.Fatalf("Extract: %v; want the NAME_MAX refusal", err)
	}
	if _, serr := os.Lstat(filepath.Join(target, "ok")); !errors.Is(serr, fs.ErrNotExist) {
		t.Errorf("ok was renamed into place before the refusal: %v", serr)
	}
	t.Logf("FAULT name=untrusted/pull-name-over-name-max/pull outcome=failed-clearly bytes_lost=0")
}
