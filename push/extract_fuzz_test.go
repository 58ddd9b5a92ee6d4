package push

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzExtractLayer(f *testing.F) {
	m := exNewModel(f)
	f.Add(m.layer1)
	f.Add(exTar(f, exFile("models/config.json", "{}"), exSymlink("models/a", "config.json"), exFile("models/a", "replaced")))
	f.Add(exTar(f, exDir("models/d/"), exSymlink("models/d/up", ".."), exSymlink("models/d/self", "."), exSymlink("models/x", "d/up/d/self")))
	for _, hc := range exHostileCorpus(f) {
		f.Add(hc.tar)
	}
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		canary := filepath.Join(parent, "canary")
		if err := os.Mkdir(canary, 0o755); err != nil {
			t.Fatal(err)
		}
		targets := map[string]string{"/models": filepath.Join(parent, "t1"), "/": filepath.Join(parent, "t2")}
		for prefix, target := range targets {
			err := ExtractLayer(context.Background(), bytes.NewReader(data), target, prefix)
			if err != nil && err.Error() == "" {
				t.Fatal("empty error message")
			}
			exCheckExtracted(t, target, err == nil)
		}
		ents, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if p := filepath.Join(parent, e.Name()); p != canary && p != targets["/models"] && p != targets["/"] {
				t.Errorf("%s appeared next to the targets", p)
			}
		}
		if ents, err := os.ReadDir(canary); err != nil || len(ents) != 0 {
			t.Errorf("canary: %d entries, %v", len(ents), err)
		}
	})
}

// exCheckExtracted checks what ExtractLayer left in target: no partial files,
// no special files, files 0644, and symlinks that resolve inside target.
// After a failed ExtractLayer, no regular file or symlink may exist at all.
func exCheckExtracted(t *testing.T, target string, ok bool) {
	t.Helper()
	err := filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(d.Name(), extractPartialSuffix) {
			t.Errorf("partial file %s left behind", p)
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(target, p)
		switch mode := fi.Mode(); {
		case mode.IsDir():
			if mode&^(fs.ModeDir|0o755) != 0 {
				t.Errorf("%s: mode %v", rel, mode)
			}
		case mode.IsRegular():
			if !ok {
				t.Errorf("%s exists after a failed extraction", rel)
			}
			if mode.Perm()&^0o644 != 0 {
				t.Errorf("%s: mode %v", rel, mode)
			}
		case mode&fs.ModeSymlink != 0:
			if !ok {
				t.Errorf("%s exists after a failed extraction", rel)
			}
			if !exResolvesInside(t, target, filepath.ToSlash(rel)) {
				l, _ := os.Readlink(p)
				t.Errorf("symlink %s -> %s resolves outside the target", rel, l)
			}
		default:
			t.Errorf("%s: special file %v", rel, mode)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

// exResolvesInside follows rel under root the way the kernel would, and
// reports whether it never leaves root.
func exResolvesInside(t *testing.T, root, rel string) bool {
	var cur []string
	rest := strings.Split(rel, "/")
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return false
			}
			cur = cur[:len(cur)-1]
			continue
		}
		p := filepath.Join(append([]string{root}, append(cur, c)...)...)
		fi, err := os.Lstat(p)
		if err != nil {
			return true // resolution stops inside root
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if hops++; hops > 40 {
				return true // ELOOP
			}
			l, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			if filepath.IsAbs(l) {
				return false
			}
			rest = append(strings.Split(l, "/"), rest...)
			continue
		}
		cur = append(cur, c)
		if !fi.IsDir() && len(rest) > 0 {
			return true // ENOTDIR
		}
	}
	return true
}
