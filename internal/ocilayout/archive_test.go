package ocilayout

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// archiveImage opens the archive file and resolves its tag v1.
func archiveImage(t *testing.T, file string) (v1.Hash, error) {
	t.Helper()
	a, err := OpenArchive(file)
	if err != nil {
		return v1.Hash{}, err
	}
	defer a.Close()
	d, err := Resolve(a, file, "v1", nil)
	if err != nil {
		return v1.Hash{}, err
	}
	if _, err := a.ReadBlob(d.Digest, 1<<20); err != nil {
		return v1.Hash{}, err
	}
	return d.Digest, nil
}

func volumes(t *testing.T, file string) []string {
	t.Helper()
	m, err := filepath.Glob(file + ".[0-9][0-9][0-9]")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// twoLayouts makes layouts old and new, each holding a different image
// tagged v1 with a layer of about 12 KiB.
func twoLayouts(t *testing.T) (oldDir string, oldImg v1.Descriptor, newDir string, newImg v1.Descriptor) {
	base := t.TempDir()
	oldDir, newDir = filepath.Join(base, "old"), filepath.Join(base, "new")
	oldImg = newLayout(t, oldDir, "old image", "v1", 12<<10)
	newImg = newLayout(t, newDir, "new image", "v1", 12<<10)
	return
}

// A split archive written where a single-file archive was replaces it: the
// single file is removed, and reading FILE gives the new image.
func TestSplitArchiveReplacesSingleFile(t *testing.T) {
	oldDir, _, newDir, newImg := twoLayouts(t)
	file := filepath.Join(t.TempDir(), "x.tar")
	if err := WriteArchive(oldDir, file); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchiveSplit(newDir, file, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("the old single-file archive %s is still there beside the volumes (stat: %v)", file, err)
	}
	if v := volumes(t, file); len(v) < 3 {
		t.Fatalf("volumes %v, want at least 3", v)
	}
	got, err := archiveImage(t, file)
	if err != nil {
		t.Fatal(err)
	}
	if got != newImg.Digest {
		t.Errorf("reading %s gives %s, want the new image %s", file, got, newImg.Digest)
	}
}

// A single-file archive written where a split archive was removes all the
// old volumes, so neither a reader nor `cat FILE.* > FILE` finds the old image.
func TestSingleArchiveReplacesVolumes(t *testing.T) {
	oldDir, _, newDir, newImg := twoLayouts(t)
	file := filepath.Join(t.TempDir(), "x.tar")
	if err := WriteArchiveSplit(oldDir, file, 4096); err != nil {
		t.Fatal(err)
	}
	if v := volumes(t, file); len(v) < 3 {
		t.Fatalf("volumes %v, want at least 3", v)
	}
	if err := WriteArchive(newDir, file); err != nil {
		t.Fatal(err)
	}
	if v := volumes(t, file); len(v) != 0 {
		t.Errorf("old volumes left beside the new archive: %v", v)
	}
	got, err := archiveImage(t, file)
	if err != nil {
		t.Fatal(err)
	}
	if got != newImg.Digest {
		t.Errorf("reading %s gives %s, want the new image %s", file, got, newImg.Digest)
	}
}

// A shorter split set over a longer one leaves no stale tail volume, and a
// split set over a split set reads as the new image.
func TestSplitArchiveOverLongerSplit(t *testing.T) {
	oldDir, _, newDir, newImg := twoLayouts(t)
	file := filepath.Join(t.TempDir(), "x.tar")
	if err := WriteArchiveSplit(oldDir, file, 2048); err != nil {
		t.Fatal(err)
	}
	n := len(volumes(t, file))
	if err := WriteArchiveSplit(newDir, file, 8192); err != nil {
		t.Fatal(err)
	}
	if m := len(volumes(t, file)); m >= n || m < 2 {
		t.Fatalf("%d volumes after writing %d: want fewer, at least 2", m, n)
	}
	if got, err := archiveImage(t, file); err != nil || got != newImg.Digest {
		t.Errorf("reading %s gives %s (%v), want %s", file, got, err, newImg.Digest)
	}
}

// When both FILE and FILE.000... exist (a crash between publishing one form
// and removing the other, or an older modelcar), reading FILE is an error
// naming both, not the silent choice of one of two possibly different images.
func TestArchiveBothFormsRefused(t *testing.T) {
	oldDir, _, newDir, _ := twoLayouts(t)
	dir := t.TempDir()
	file, other := filepath.Join(dir, "x.tar"), filepath.Join(dir, "other.tar")
	if err := WriteArchive(oldDir, file); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchiveSplit(newDir, other, 4096); err != nil {
		t.Fatal(err)
	}
	for i := range volumes(t, other) {
		if err := os.Rename(VolumeName(other, i), VolumeName(file, i)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := OpenArchive(file)
	if err == nil {
		t.Fatalf("opened %s although %s exists too", file, VolumeName(file, 0))
	}
	if !strings.Contains(err.Error(), file+" and") || !strings.Contains(err.Error(), VolumeName(file, 0)) {
		t.Errorf("error does not name both forms: %v", err)
	}
}

// While one form replaces the other, after the new one is published and
// before the old one is removed (where a crash would leave them), a reader
// never gets the old image: it gets an error naming both.
func TestArchiveReplaceNeverServesOld(t *testing.T) {
	for _, c := range []struct {
		name           string
		oldVol, newVol int64
	}{{"split over single", 0, 4096}, {"single over split", 4096, 0}} {
		t.Run(c.name, func(t *testing.T) {
			oldDir, oldImg, newDir, _ := twoLayouts(t)
			file := filepath.Join(t.TempDir(), "x.tar")
			if err := WriteArchiveSplit(oldDir, file, c.oldVol); err != nil {
				t.Fatal(err)
			}
			called := false
			testHookPublished = func() {
				called = true
				got, err := archiveImage(t, file)
				if err == nil && got == oldImg.Digest {
					t.Errorf("mid-commit, reading %s gives the old image", file)
				}
			}
			defer func() { testHookPublished = nil }()
			if err := WriteArchiveSplit(newDir, file, c.newVol); err != nil {
				t.Fatal(err)
			}
			if !called {
				t.Fatal("hook not called")
			}
		})
	}
}

// Joining volumes as documented (`cat FILE.* > FILE`) leaves both forms
// holding the same image: reading FILE still works and gives that image.
func TestJoinedVolumesBesideThemRead(t *testing.T) {
	_, _, newDir, newImg := twoLayouts(t)
	file := filepath.Join(t.TempDir(), "x.tar")
	if err := WriteArchiveSplit(newDir, file, 4096); err != nil {
		t.Fatal(err)
	}
	var joined []byte
	for _, v := range volumes(t, file) {
		b, err := os.ReadFile(v)
		if err != nil {
			t.Fatal(err)
		}
		joined = append(joined, b...)
	}
	if err := os.WriteFile(file, joined, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := archiveImage(t, file); err != nil || got != newImg.Digest {
		t.Errorf("reading %s beside its volumes: %s, %v; want %s", file, got, err, newImg.Digest)
	}
}

// CheckArchiveTarget lets an archive replace an archive (or nothing, or an
// empty file), never another kind of file or a directory.
func TestCheckArchiveTarget(t *testing.T) {
	oldDir, _, _, _ := twoLayouts(t)
	dir := t.TempDir()
	archive := filepath.Join(dir, "old.tar")
	if err := WriteArchive(oldDir, archive); err != nil {
		t.Fatal(err)
	}
	notes := filepath.Join(dir, "notes.txt")
	empty := filepath.Join(dir, "empty.tar")
	os.WriteFile(notes, []byte("important"), 0o644)
	os.WriteFile(empty, nil, 0o644)
	for _, ok := range []string{archive, empty, filepath.Join(dir, "new.tar")} {
		if err := CheckArchiveTarget(ok); err != nil {
			t.Errorf("CheckArchiveTarget(%s): %v", ok, err)
		}
	}
	for file, want := range map[string]string{notes: "exists and is not an OCI archive", dir: "is a directory"} {
		if err := CheckArchiveTarget(file); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckArchiveTarget(%s): %v, want %q", file, err, want)
		}
	}
}
