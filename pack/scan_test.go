package pack_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// symlinkTree makes a model directory "model" beside a directory "outside"
// holding a secret, and returns both.
func symlinkTree(t *testing.T) (model, outside string) {
	t.Helper()
	root := t.TempDir()
	model, outside = filepath.Join(root, "model"), filepath.Join(root, "outside")
	for _, d := range []string{model, outside, filepath.Join(model, "sub"), filepath.Join(root, "model-evil")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(model, "config.json"), `{"a": 1}`)
	write(filepath.Join(model, "sub", "vocab.txt"), "hello")
	write(filepath.Join(outside, "shadow"), "root:secret")
	write(filepath.Join(root, "model-evil", "x"), "evil")
	return model, outside
}

func symlinkT(t *testing.T, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestScanSymlinkRule: a link is followed by default only when it resolves
// inside the model directory; the refusal names the link and its target.
func TestScanSymlinkRule(t *testing.T) {
	for _, tc := range []struct {
		name string
		link string // relative to the model directory
		// target: %m is the model directory, %o the outside one
		target string
		// want is "" when the scan passes, else a part of the error
		want string
		// external: refused by default, followed with FollowExternalSymlinks
		external bool
	}{
		{name: "relative inside", link: "tok.json", target: "config.json"},
		{name: "absolute inside", link: "tok.json", target: "%m/config.json"},
		{name: "out and back in", link: "sub/v2.txt", target: "../../model/sub/vocab.txt"},
		{name: "into a subdirectory", link: "v.txt", target: "sub/vocab.txt"},
		{name: "absolute outside", link: "tokenizer.model", target: "%o/shadow", want: "outside the model directory", external: true},
		{name: "relative outside", link: "sub/tokenizer.model", target: "../../outside/shadow", want: "outside the model directory", external: true},
		{name: "sibling with the same prefix", link: "x", target: "../model-evil/x", want: "outside the model directory", external: true},
		{name: "chain ending outside", link: "a", target: "b", want: "outside the model directory", external: true},
		{name: "etc passwd", link: "passwd", target: "/etc/passwd", want: "outside the model directory", external: true},
		{name: "dangling", link: "gone.json", target: "nothing-here.json", want: "is dangling: "},
		{name: "loop", link: "loop1", target: "loop2", want: "a loop of symlinks"},
		{name: "directory inside", link: "subdir", target: "sub", want: "a directory, not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			model, outside := symlinkTree(t)
			target := strings.NewReplacer("%m", model, "%o", outside).Replace(tc.target)
			symlinkT(t, target, filepath.Join(model, filepath.FromSlash(tc.link)))
			switch tc.name {
			case "chain ending outside":
				symlinkT(t, filepath.Join(outside, "shadow"), filepath.Join(model, "b"))
			case "loop":
				symlinkT(t, "loop1", filepath.Join(model, "loop2"))
			}
			_, err := pack.Scan(context.Background(), model, pack.ScanOptions{})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Scan: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Scan followed %s -> %s", tc.link, tc.target)
			}
			var ie *pack.InputError
			if !errors.As(err, &ie) || (ie.File != tc.link && !(tc.name == "loop" && ie.File == "loop2")) {
				t.Errorf("error %q does not name the link %s", err, tc.link)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			var ee *pack.ExternalSymlinkError
			if errors.As(err, &ee) != tc.external {
				t.Errorf("error %q: ExternalSymlinkError %v, want %v", err, errors.As(err, &ee), tc.external)
			}
			if !tc.external {
				return
			}
			if !strings.Contains(err.Error(), target) {
				t.Errorf("error %q does not name the target %s", err, target)
			}
			files, err := pack.Scan(context.Background(), model, pack.ScanOptions{FollowExternalSymlinks: true})
			if err != nil {
				t.Fatalf("Scan with FollowExternalSymlinks: %v", err)
			}
			found := false
			for _, f := range files {
				found = found || f.Rel == tc.link
			}
			if !found {
				t.Errorf("FollowExternalSymlinks: %s not listed", tc.link)
			}
		})
	}
}

// TestScanHFCacheLinks: a snapshot's links into its own repository's blobs/
// are followed by default, from the snapshot or a directory in it; links
// into another repository's blobs, or elsewhere in the repository, are not.
func TestScanHFCacheLinks(t *testing.T) {
	m := genModel(t, 41, 1<<20, 2)
	cache := t.TempDir()
	snap := writeHFCache(t, m, cache, "org/name", "0123abcd")
	other := writeHFCache(t, m, cache, "org/other", "4567cdef")
	if _, err := pack.Scan(context.Background(), snap, pack.ScanOptions{}); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	// A snapshot reached through a symlinked cache path is the same snapshot.
	alias := filepath.Join(t.TempDir(), "hub")
	symlinkT(t, cache, alias)
	if _, err := pack.Scan(context.Background(), filepath.Join(alias, "models--org--name", "snapshots", "0123abcd"), pack.ScanOptions{}); err != nil {
		t.Fatalf("snapshot through a symlinked cache: %v", err)
	}
	sub := filepath.Join(snap, "extra")
	otherBlob, err := os.Readlink(filepath.Join(other, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	symlinkT(t, filepath.Join("..", "..", "..", "blobs", filepath.Base(otherBlob)), filepath.Join(sub, "own.json"))
	if _, err := pack.Scan(context.Background(), sub, pack.ScanOptions{}); err != nil {
		t.Fatalf("a directory inside the snapshot: %v", err)
	}
	for name, target := range map[string]string{
		"another repository's blob": filepath.Join("..", "..", "..", "models--org--other", "blobs", filepath.Base(otherBlob)),
		"the repository's refs":     filepath.Join("..", "..", "refs", "main"),
	} {
		t.Run(name, func(t *testing.T) {
			os.WriteFile(filepath.Join(snap, "..", "..", "refs", "main"), []byte("0123abcd"), 0o644)
			link := filepath.Join(snap, "stolen.json")
			os.Remove(link)
			symlinkT(t, target, link)
			_, err := pack.Scan(context.Background(), snap, pack.ScanOptions{})
			var ee *pack.ExternalSymlinkError
			if !errors.As(err, &ee) || ee.Link != "stolen.json" || ee.Target != target {
				t.Errorf("Scan: %v, want an ExternalSymlinkError for stolen.json -> %s", err, target)
			}
			os.Remove(link)
		})
	}
}

// TestPackRefusesExternalSymlink: the whole pack fails before writing
// anything, and packs the file with WithFollowExternalSymlinks.
func TestPackRefusesExternalSymlink(t *testing.T) {
	m := genModel(t, 42, 1<<20, 2)
	secret := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(secret, []byte("root:secret"), 0o600)
	symlinkT(t, secret, filepath.Join(m.Dir, "tokenizer.model"))
	parent := t.TempDir()
	_, err := push.Pack(context.Background(), m.Dir, "oci:"+parent+"/out", []pack.Option{pack.WithCacheDir("")})
	var ee *pack.ExternalSymlinkError
	if !errors.As(err, &ee) || !strings.Contains(err.Error(), "tokenizer.model") || !strings.Contains(err.Error(), secret) {
		t.Fatalf("pack of a link outside: %v", err)
	}
	assertNoOutput(t, parent)
	res := packT(t, m.Dir, "oci:"+parent+"/out", pack.WithFollowExternalSymlinks())
	found := false
	for _, l := range res.Layers {
		for _, f := range l.Files {
			found = found || f == "tokenizer.model"
		}
	}
	if !found {
		t.Errorf("WithFollowExternalSymlinks: tokenizer.model not packed")
	}
}

// TestPackedFileSwappedAfterScan: a file replaced by a link to outside the
// model (or by another file) between the scan and the read is refused, not
// followed.
func TestPackedFileSwappedAfterScan(t *testing.T) {
	for _, swap := range []string{"symlink", "file"} {
		t.Run(swap, func(t *testing.T) {
			model, outside := symlinkTree(t)
			files, err := pack.Scan(context.Background(), model, pack.ScanOptions{})
			if err != nil {
				t.Fatal(err)
			}
			secret := filepath.Join(outside, "same-size.json")
			os.WriteFile(secret, []byte(`{"b": 2}`), 0o644) // as long as config.json
			cfg := filepath.Join(model, "config.json")
			os.Rename(cfg, filepath.Join(outside, "old.json")) // keeps its inode taken
			if swap == "symlink" {
				symlinkT(t, secret, cfg)
			} else {
				os.WriteFile(cfg, []byte(`{"b": 2}`), 0o644)
			}
			_, err = pack.ValidateModel(context.Background(), files)
			var ie *pack.InputError
			if !errors.As(err, &ie) || ie.File != "config.json" {
				t.Fatalf("ValidateModel after config.json became a %s: %v", swap, err)
			}
		})
	}
}
