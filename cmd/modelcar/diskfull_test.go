package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
)

// smallDisk mounts a tmpfs of the given size for the test.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Getuid() != 0 {
		if testenv.Require() {
			t.Fatal("the disk-full test needs root to mount a tmpfs")
		}
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mounting a %s tmpfs: %v", size, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// TestDiskFull: pack and pull onto a disk too small for the model fail with
// a clear error, and leave nothing that looks complete.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a tmpfs")
	}
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: 3, TotalSize: 24 << 20, Shards: 3})
	if err != nil {
		t.Fatal(err)
	}
	disk := smallDisk(t, "8m")
	env := []string{"XDG_CACHE_HOME=" + t.TempDir()}
	for _, out := range []string{"oci:" + disk + "/layout:v1", "oci-archive:" + disk + "/model.tar"} {
		r := runWith(t, env, "", "pack", m.Dir, "--output", out)
		if r.code != 1 || !strings.Contains(r.stderr, "no space left on device") {
			t.Errorf("pack to a full disk (%s): %+v", out, r)
		}
		if ents, _ := os.ReadDir(disk); len(ents) != 0 {
			t.Errorf("pack to a full disk left %v", ents)
		}
	}
	// pull: pack locally, then pull into the small disk.
	layout := "oci:" + filepath.Join(t.TempDir(), "oci") + ":v1"
	if r := runWith(t, env, "", "pack", m.Dir, "--output", layout); r.code != 0 {
		t.Fatalf("pack: %+v", r)
	}
	dir := filepath.Join(disk, "pulled")
	r := runWith(t, env, "", "pull", layout, dir)
	if r.code != 1 || !strings.Contains(r.stderr, "no space left on device") {
		t.Errorf("pull to a full disk: %+v", r)
	}
	// Every file under its final name is complete.
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || strings.HasPrefix(info.Name(), ".") {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		want, _ := os.ReadFile(filepath.Join(m.Dir, rel))
		got, _ := os.ReadFile(p)
		if string(want) != string(got) {
			t.Errorf("%s is under its final name but incomplete after a full disk", rel)
		}
		return nil
	})
}
