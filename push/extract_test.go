package push

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

var exUpdateHostile = flag.Bool("update-hostile", false, "rewrite testdata/hostile from the hostile corpus")

const exHostileDir = "../testdata/hostile"

// exEntry is one entry of a hand-made tar.
type exEntry struct {
	name   string
	typ    byte
	body   []byte
	link   string
	mode   int64
	format tar.Format
	// size, when non-zero, is written in the header instead of len(body),
	// and the tar is cut right after the short body (a size lie).
	size int64
}

func exFile(name, body string) exEntry {
	return exEntry{name: name, typ: tar.TypeReg, body: []byte(body)}
}
func exDir(name string) exEntry { return exEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
func exSymlink(name, target string) exEntry {
	return exEntry{name: name, typ: tar.TypeSymlink, link: target}
}

// exTar writes entries into a deterministic tar stream.
func exTar(t testing.TB, entries ...exEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		size := int64(len(e.body))
		if e.size != 0 {
			size = e.size
		}
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: mode, ModTime: time.Unix(0, 0), Format: e.format}
		if e.typ == tar.TypeXGlobalHeader {
			hdr = &tar.Header{Name: e.name, Typeflag: e.typ, PAXRecords: map[string]string{"comment": "global"}}
		}
		if e.typ == tar.TypeReg {
			hdr.Size = size
		}
		if e.typ == tar.TypeChar || e.typ == tar.TypeBlock {
			hdr.Devmajor, hdr.Devminor = 1, 3
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if len(e.body) > 0 {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatalf("tar body %q: %v", e.name, err)
			}
		}
		if e.size != 0 && e.size != int64(len(e.body)) {
			return buf.Bytes() // truncated: no padding, no end-of-archive marker
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// exRetype changes the type flag of the tar header block at off and fixes its
// checksum, for entry types that tar.Writer refuses to write.
func exRetype(b []byte, off int, typ byte) []byte {
	h := b[off : off+512]
	h[156] = typ
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// exPaxSparseTar is a 1 TiB GNU sparse file (PAX format 0.1) in a few blocks
// of tar; tar.Writer drops GNU.sparse records, so the PAX header is made by
// hand.
func exPaxSparseTar(t testing.TB) []byte {
	var recs string
	for _, kv := range [][2]string{
		{"GNU.sparse.major", "0"}, {"GNU.sparse.minor", "1"}, {"GNU.sparse.size", "1099511627776"},
		{"GNU.sparse.numblocks", "1"}, {"GNU.sparse.map", "1099511627775,1"},
	} {
		r := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(r) + 1
		for len(fmt.Sprint(n))+len(r) != n {
			n++
		}
		recs += fmt.Sprint(n) + r
	}
	pax := exRetype(exTar(t, exFile("PaxHeaders/evil-sparse", recs)), 0, tar.TypeXHeader)
	pax = pax[:len(pax)-1024] // drop the end-of-archive marker
	return append(pax, exTar(t, exFile("models/evil-sparse", "x"))...)
}

// exHostileCase is one tar of the hostile corpus: ExtractLayer must refuse
// it with an error naming entry.
type exHostileCase struct {
	name  string // file name under testdata/hostile, without .tar
	entry string // entry the error must name
	what  string // substring the error must hold
	tar   []byte
}

func exHostileCorpus(t testing.TB) []exHostileCase {
	longName := "models/evil-" + strings.Repeat("a", 5000)
	deep := "models/" + strings.Repeat("d/", 200) + "evil"
	c := func(name, entry, what string, entries ...exEntry) exHostileCase {
		return exHostileCase{name: name, entry: entry, what: what, tar: exTar(t, entries...)}
	}
	return []exHostileCase{
		c("dotdot", "../evil", `".."`, exFile("models/ok", "ok"), exFile("../evil", "evil")),
		c("models-dotdot", "models/../../evil", `".."`, exFile("models/../../evil", "evil")),
		c("dotdot-inside", "models/../models/evil", `".."`, exFile("models/../models/evil", "evil")),
		c("absolute", "/etc/evil", "absolute", exFile("/etc/evil", "evil")),
		c("absolute-models", "/models/evil", "absolute", exFile("/models/evil", "evil")),
		c("symlink-escape-write-through", "models/link", "outside",
			exSymlink("models/link", "../../outside"), exFile("models/link/evil", "evil")),
		c("symlink-etc-write-through", "models/etc", "absolute",
			exSymlink("models/etc", "/etc"), exFile("models/etc/evil", "evil")),
		c("symlink-chain-escape", "models/l3", "outside",
			exDir("models/d/"), exSymlink("models/d/l1", ".."), exSymlink("models/l3", "d/l1/../../.."), exFile("models/l3/evil", "evil")),
		// d/l1/../.. climbs out through l1 when the kernel resolves it; it is
		// stored cleaned (".") and then nothing is written through it.
		c("symlink-chain-write-through", "models/l2/evil", "symlink",
			exDir("models/d/"), exSymlink("models/d/l1", ".."), exSymlink("models/l2", "d/l1/../.."), exFile("models/l2/evil", "evil")),
		c("symlink-inside-write-through", "models/ln/evil", "symlink",
			exDir("models/sub/"), exSymlink("models/ln", "sub"), exFile("models/ln/evil", "evil")),
		c("prefix-symlink", "models", "must be a directory",
			exSymlink("models", "/"), exFile("models/evil", "evil")),
		c("hardlink-etc-passwd", "models/evil-passwd", "hard link",
			exEntry{name: "models/evil-passwd", typ: tar.TypeLink, link: "/etc/passwd"}),
		c("hardlink-outside", "models/evil-link", "hard link",
			exEntry{name: "models/evil-link", typ: tar.TypeLink, link: "../canary/evil"}),
		c("hardlink-inside", "models/evil-copy", "hard link",
			exFile("models/config.json", "{}"), exEntry{name: "models/evil-copy", typ: tar.TypeLink, link: "models/config.json"}),
		c("chardev", "models/evil-null", "character device",
			exEntry{name: "models/evil-null", typ: tar.TypeChar, mode: 0o666}),
		c("blockdev", "models/evil-disk", "block device",
			exEntry{name: "models/evil-disk", typ: tar.TypeBlock, mode: 0o660}),
		c("fifo", "models/evil-fifo", "FIFO",
			exEntry{name: "models/evil-fifo", typ: tar.TypeFifo}),
		c("truncated", "models/evil-big", "truncated",
			exFile("models/config.json", "{}"), exEntry{name: "models/evil-big", typ: tar.TypeReg, body: bytes.Repeat([]byte("e"), 1000), size: 1 << 20}),
		{name: "sparse-pax", entry: "models/evil-sparse", what: "sparse", tar: exPaxSparseTar(t)},
		{name: "sparse-gnu", entry: "models/evil-sparse", what: "refused",
			tar: exRetype(exTar(t, exEntry{name: "models/evil-sparse", typ: tar.TypeReg, body: []byte("x"), format: tar.FormatGNU}), 0, tar.TypeGNUSparse)},
		c("whiteout", "models/.wh.evil", "whiteout", exFile("models/.wh.evil", "")),
		c("opaque-whiteout", "models/.wh..wh..opq", "whiteout", exFile("models/evil", "evil"), exFile("models/.wh..wh..opq", "")),
		c("reserved-partial", "models/evil.modelcar-partial", "reserved", exFile("models/evil.modelcar-partial", "evil")),
		c("reserved-state", "models/.modelcar-pull.json", "reserved", exFile("models/.modelcar-pull.json", "{}")),
		c("long-name", longName, "limit", exFile(longName, "evil")),
		// A component longer than NAME_MAX failed only at the rename, after
		// the files before it were renamed into place.
		c("long-component", "models/evil-"+strings.Repeat("c", 300), "255-byte",
			exFile("models/ok", "ok"), exFile("models/evil-"+strings.Repeat("c", 300), "evil")),
		c("deep-path", deep, "limit", exFile(deep, "evil")),
		c("dir-over-file", "models/evil/", "not a directory",
			exFile("models/evil", "x"), exDir("models/evil/")),
	}
}

// exAssertConfined checks that nothing but target and an empty canary exist
// in parent, and that no file or directory named *evil* exists anywhere.
func exAssertConfined(t *testing.T, parent, target, canary string) {
	t.Helper()
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		p := filepath.Join(parent, e.Name())
		if p != target && p != canary {
			t.Errorf("%s appeared next to the target", p)
		}
	}
	if ents, err := os.ReadDir(canary); err != nil || len(ents) != 0 {
		t.Errorf("canary dir: %v entries, err %v", len(ents), err)
	}
	_ = filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Errorf("walk: %v", err)
			return nil
		}
		if strings.Contains(d.Name(), "evil") {
			t.Errorf("%s exists", p)
		}
		if strings.HasSuffix(d.Name(), extractPartialSuffix) {
			t.Errorf("partial file %s left behind", p)
		}
		return nil
	})
	for _, p := range []string{"/etc/evil", "/evil", filepath.Join(filepath.Dir(parent), "evil"), filepath.Join(filepath.Dir(parent), "outside")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists", p)
		}
	}
}

// exSandbox returns parent/a/target (not yet created) and an empty
// parent/canary, so that "../../x" from inside target stays under parent.
func exSandbox(t *testing.T) (parent, target, canary string) {
	parent = t.TempDir()
	canary = filepath.Join(parent, "canary")
	if err := os.Mkdir(canary, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(parent, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	return parent, filepath.Join(parent, "a", "target"), canary
}

func exAssertSandbox(t *testing.T, parent, target, canary string) {
	t.Helper()
	a := filepath.Join(parent, "a")
	ents, _ := os.ReadDir(a)
	for _, e := range ents {
		// Extract's own resume state lives beside the target, by design.
		if e.Name() != "target" && e.Name() != ".target"+extractStateName {
			t.Errorf("%s appeared next to the target", filepath.Join(a, e.Name()))
		}
	}
	exAssertConfined(t, parent, a, canary)
}

func TestExtractLayerHostile(t *testing.T) {
	for _, hc := range exHostileCorpus(t) {
		t.Run(hc.name, func(t *testing.T) {
			parent, target, canary := exSandbox(t)
			err := ExtractLayer(context.Background(), bytes.NewReader(hc.tar), target, "/models")
			if err == nil {
				t.Fatal("ExtractLayer succeeded")
			}
			if !strings.Contains(err.Error(), hc.entry) || !strings.Contains(err.Error(), hc.what) {
				t.Errorf("error %q does not name entry %q with %q", err, hc.entry, hc.what)
			}
			var ee *EntryError
			if !errors.As(err, &ee) || ee.Name != hc.entry {
				t.Errorf("error %v: want *EntryError for %q", err, hc.entry)
			}
			exAssertSandbox(t, parent, target, canary)
			// Nothing of a refused stream is left under its final name.
			_ = filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					t.Errorf("%s left behind", p)
				}
				return nil
			})
		})
	}
}

// The hostile corpus is also committed under testdata/hostile; every file
// there must be refused.
func TestHostileTestdata(t *testing.T) {
	corpus := exHostileCorpus(t)
	if *exUpdateHostile {
		if err := os.MkdirAll(exHostileDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, hc := range corpus {
			if err := os.WriteFile(filepath.Join(exHostileDir, hc.name+".tar"), hc.tar, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, err := filepath.Glob(filepath.Join(exHostileDir, "*.tar"))
	if err != nil {
		t.Fatal(err)
	}
	for _, hc := range corpus {
		if !slices.Contains(files, filepath.Join(exHostileDir, hc.name+".tar")) {
			t.Errorf("%s.tar missing from %s; run go test ./push -run TestHostileTestdata -update-hostile", hc.name, exHostileDir)
		}
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > 10<<10 {
				t.Errorf("%d bytes, over 10 KiB", len(b))
			}
			parent, target, canary := exSandbox(t)
			if err := ExtractLayer(context.Background(), bytes.NewReader(b), target, "/models"); err == nil {
				t.Error("ExtractLayer succeeded")
			}
			exAssertSandbox(t, parent, target, canary)
		})
	}
}

// Every hostile tar, as a layer of an image, fails Extract with an error
// naming the layer digest and the entry.
func TestExtractHostileImage(t *testing.T) {
	good := exTar(t, exDir("models/"), exFile("models/config.json", `{"a":1}`))
	for _, hc := range exHostileCorpus(t) {
		t.Run(hc.name, func(t *testing.T) {
			parent, target, canary := exSandbox(t)
			bad := static.NewLayer(hc.tar, types.OCIUncompressedLayer)
			img := exImage(t, static.NewLayer(good, types.OCIUncompressedLayer), bad)
			err := Extract(context.Background(), img, target, ExtractOptions{Jobs: 2})
			if err == nil {
				t.Fatal("Extract succeeded")
			}
			d, _ := bad.Digest()
			if !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), hc.entry) {
				t.Errorf("error %q does not name layer %s and entry %q", err, d, hc.entry)
			}
			exAssertSandbox(t, parent, target, canary)
		})
	}
}

// Two-layer test model: config and tokenizer in layer 1 with a symlink to
// the weights of layer 2, plus entries Extract must skip.
type exModel struct {
	layer1, layer2 []byte
	want           map[string]string // rel -> content, or "-> target" for symlinks
}

func exNewModel(t testing.TB) exModel {
	weights := make([]byte, 2<<20)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(weights)
	config := `{"architectures":["LlamaForCausalLM"]}`
	tok := `{"version":"1.0"}`
	l1 := exTar(t,
		exEntry{name: "pax_global_header", typ: tar.TypeXGlobalHeader},
		exFile("stargz.index.json", "{}"),
		exFile(".prefetch.landmark", "x"),
		exDir("etc/"),
		exFile("etc/hostname", "outside the prefix"),
		exEntry{name: "bin/sh", typ: tar.TypeLink, link: "bin/busybox"}, // skipped: outside the prefix
		exDir("models/"),
		exFile("./models/config.json", config),
		exDir("models/tokenizer/"),
		exFile("models/tokenizer/tokenizer.json", tok),
		exSymlink("models/latest.safetensors", "model.safetensors"),
		exSymlink("models/tokenizer/config.json", "../config.json"),
	)
	l2 := exTar(t, exDir("models/"), exEntry{name: "models/model.safetensors", typ: tar.TypeReg, body: weights, mode: 0o4755})
	return exModel{layer1: l1, layer2: l2, want: map[string]string{
		"config.json":              config,
		"tokenizer":                "/",
		"tokenizer/tokenizer.json": tok,
		"tokenizer/config.json":    "-> ../config.json",
		"latest.safetensors":       "-> model.safetensors",
		"model.safetensors":        string(weights),
	}}
}

func exGzip(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func exZstd(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func exOpener(b []byte) tarball.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// exLayerOf makes a layer of tarBytes in the given form.
func exLayerOf(t testing.TB, form string, tarBytes []byte) v1.Layer {
	t.Helper()
	var l v1.Layer
	var err error
	switch form {
	case "tar":
		l = static.NewLayer(tarBytes, types.OCIUncompressedLayer)
	case "tar-ggcr": // ggcr gzips an uncompressed opener on the fly, whatever the media type
		l, err = tarball.LayerFromOpener(exOpener(tarBytes), tarball.WithMediaType(types.OCIUncompressedLayer))
	case "gzip":
		l, err = tarball.LayerFromOpener(exOpener(exGzip(t, tarBytes)), tarball.WithMediaType(types.OCILayer))
	case "zstd":
		l, err = tarball.LayerFromOpener(exOpener(exZstd(t, tarBytes)), tarball.WithMediaType(types.OCILayerZStd))
	case "other": // unknown media type: decompressed all the same
		l, err = tarball.LayerFromOpener(exOpener(exGzip(t, tarBytes)))
		l = &exMediaTypeLayer{Layer: l, mt: "application/vnd.example.model.layer"}
	default:
		t.Fatalf("unknown form %q", form)
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type exMediaTypeLayer struct {
	v1.Layer
	mt types.MediaType
}

func (l *exMediaTypeLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

func exImage(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

// exWrapImage replaces an image's layers, keeping its manifest.
type exWrapImage struct {
	v1.Image
	layers []v1.Layer
}

func (w *exWrapImage) Layers() ([]v1.Layer, error) { return w.layers, nil }

func exWrapLayers(t testing.TB, img v1.Image, wrap func(i int, l v1.Layer) v1.Layer) v1.Image {
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = wrap(i, l)
	}
	return &exWrapImage{Image: img, layers: out}
}

// exReadTree returns the files, directories and symlinks under dir, in the
// form of exModel.want.
func exReadTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			got[rel] = "/"
			if fi.Mode().Perm()&^0o755 != 0 {
				t.Errorf("%s: mode %v", rel, fi.Mode())
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			got[rel] = "-> " + l
		case fi.Mode().IsRegular():
			if fi.Mode().Perm()&^0o644 != 0 || fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
				t.Errorf("%s: mode %v", rel, fi.Mode())
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got[rel] = string(b)
		default:
			t.Errorf("%s: unexpected mode %v", rel, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func exAssertTree(t *testing.T, dir string, want map[string]string) {
	t.Helper()
	got := exReadTree(t, dir)
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s missing", k)
		case g != w:
			t.Errorf("%s: got %d bytes %.40q, want %d bytes %.40q", k, len(g), g, len(w), w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s", k)
		}
	}
}

func TestExtract(t *testing.T) {
	m := exNewModel(t)
	for _, form := range []string{"tar", "tar-ggcr", "gzip", "zstd", "other"} {
		for _, jobs := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/jobs%d", form, jobs), func(t *testing.T) {
				img := exImage(t, exLayerOf(t, form, m.layer1), exLayerOf(t, form, m.layer2))
				parent, target, canary := exSandbox(t)
				var progress atomic.Int64
				opts := ExtractOptions{Jobs: jobs, Progress: func(n int64) { progress.Add(n) }}
				if err := Extract(context.Background(), img, target, opts); err != nil {
					t.Fatal(err)
				}
				exAssertTree(t, target, m.want)
				exAssertSandbox(t, parent, target, canary)
				var want int64
				ls, _ := img.Layers()
				for _, l := range ls {
					rc, err := l.Compressed()
					if err != nil {
						t.Fatal(err)
					}
					n, _ := io.Copy(io.Discard, rc)
					rc.Close()
					want += n
				}
				if progress.Load() != want {
					t.Errorf("progress reported %d bytes, want %d", progress.Load(), want)
				}
				// A complete pull is stamped: extracting the same image again is
				// a no-op that reads no layer.
				progress.Store(0)
				before := exReadTree(t, target)
				if err := Extract(context.Background(), img, target, ExtractOptions{}); err != nil {
					t.Errorf("second Extract into a complete dir: %v", err)
				}
				if after := exReadTree(t, target); len(after) != len(before) {
					t.Errorf("second Extract changed the tree: %d entries, was %d", len(after), len(before))
				}
			})
		}
	}
}

func TestExtractPrefix(t *testing.T) {
	tb := exTar(t, exFile("models/config.json", "{}"), exFile("models/tokenizer/tokenizer.json", "tok"), exFile("other/x", "x"))
	img := exImage(t, exLayerOf(t, "tar", tb))
	target := filepath.Join(t.TempDir(), "out")
	if err := Extract(context.Background(), img, target, ExtractOptions{Prefix: "/models/tokenizer/"}); err != nil {
		t.Fatal(err)
	}
	exAssertTree(t, target, map[string]string{"tokenizer.json": "tok"})
	all := filepath.Join(t.TempDir(), "all")
	if err := Extract(context.Background(), img, all, ExtractOptions{Prefix: "/"}); err != nil {
		t.Fatal(err)
	}
	exAssertTree(t, all, map[string]string{"models": "/", "models/config.json": "{}", "models/tokenizer": "/",
		"models/tokenizer/tokenizer.json": "tok", "other": "/", "other/x": "x"})
	// The symlink tokenizer/config.json -> ../config.json climbs out of the
	// prefix, so it is refused.
	_ = os.RemoveAll(target)
	img = exImage(t, exLayerOf(t, "tar", exTar(t, exSymlink("models/tokenizer/config.json", "../config.json"))))
	if err := Extract(context.Background(), img, target, ExtractOptions{Prefix: "models/tokenizer"}); err == nil {
		t.Error("symlink out of the prefix accepted")
	}
	if err := Extract(context.Background(), img, t.TempDir(), ExtractOptions{Prefix: "/models/../etc"}); err == nil {
		t.Error("prefix with .. accepted")
	}
}

// When two layers write the same file, the later layer wins, even when it
// finishes reading first.
func TestExtractOverlapLaterLayerWins(t *testing.T) {
	l1 := exTar(t, exFile("models/config.json", "v1"), exFile("models/a", "a"))
	l2 := exTar(t, exFile("models/config.json", "v2"), exFile("models/b", "b"))
	l3 := exTar(t, exFile("models/config.json", "v3"), exFile("models/config.json", "v3 again"), exFile("models/c", "c"))
	want := map[string]string{"config.json": "v3 again", "a": "a", "b": "b", "c": "c"}
	for i := range 5 {
		img := exImage(t, exLayerOf(t, "tar", l1), exLayerOf(t, "gzip", l2), exLayerOf(t, "tar", l3))
		// Slow down the earlier layers so that later ones finish first.
		img = exWrapLayers(t, img, func(j int, l v1.Layer) v1.Layer {
			return &exHookLayer{Layer: l, delay: time.Duration(2-j) * time.Duration(i) * 10 * time.Millisecond}
		})
		target := filepath.Join(t.TempDir(), "out")
		if err := Extract(context.Background(), img, target, ExtractOptions{Jobs: 3}); err != nil {
			t.Fatal(err)
		}
		exAssertTree(t, target, want)
	}
}

// exHookLayer counts, delays, breaks or replaces the reads of a layer.
type exHookLayer struct {
	v1.Layer
	reads     *atomic.Int32
	delay     time.Duration
	failAfter int64  // > 0: reads fail after this many bytes
	blob      []byte // non-nil: Compressed returns this instead
	diffID    *v1.Hash
}

var errExInjected = errors.New("injected read failure")

func (l *exHookLayer) wrap(rc io.ReadCloser, err error) (io.ReadCloser, error) {
	if l.reads != nil {
		l.reads.Add(1)
	}
	if err != nil {
		return nil, err
	}
	if l.delay > 0 {
		time.Sleep(l.delay)
	}
	if l.failAfter > 0 {
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(io.LimitReader(rc, l.failAfter), &exErrReader{errExInjected}), rc}, nil
	}
	return rc, nil
}

func (l *exHookLayer) Compressed() (io.ReadCloser, error) {
	if l.blob != nil {
		return l.wrap(io.NopCloser(bytes.NewReader(l.blob)), nil)
	}
	return l.wrap(l.Layer.Compressed())
}

func (l *exHookLayer) Uncompressed() (io.ReadCloser, error) { return l.wrap(l.Layer.Uncompressed()) }

func (l *exHookLayer) DiffID() (v1.Hash, error) {
	if l.diffID != nil {
		return *l.diffID, nil
	}
	return l.Layer.DiffID()
}

type exErrReader struct{ err error }

func (r *exErrReader) Read([]byte) (int, error) { return 0, r.err }

// exNothingFinal asserts that dir holds no file but Extract's state file.
func exNothingFinal(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != extractStateName {
			t.Errorf("%s exists", p)
		}
		return nil
	})
}

func TestExtractCorruptLayer(t *testing.T) {
	m := exNewModel(t)
	for _, form := range []string{"tar", "gzip", "zstd"} {
		t.Run(form, func(t *testing.T) {
			good := exLayerOf(t, form, m.layer1)
			rc, err := good.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			blob, _ := io.ReadAll(rc)
			rc.Close()
			// Flip a byte in the config.json content (tar) or in the middle
			// of the compressed stream.
			i := bytes.Index(blob, []byte("LlamaForCausalLM"))
			if i < 0 {
				i = len(blob) / 2
			}
			blob[i] ^= 0x20
			img := exWrapLayers(t, exImage(t, good), func(_ int, l v1.Layer) v1.Layer { return &exHookLayer{Layer: l, blob: blob} })
			parent, target, canary := exSandbox(t)
			err = Extract(context.Background(), img, target, ExtractOptions{})
			d, _ := good.Digest()
			if err == nil || !strings.Contains(err.Error(), d.String()) {
				t.Fatalf("Extract of a corrupt layer: %v, want an error naming %s", err, d)
			}
			if form == "tar" && !strings.Contains(err.Error(), "digest mismatch") {
				t.Errorf("error %q: want a digest mismatch", err)
			}
			exNothingFinal(t, target)
			exAssertSandbox(t, parent, target, canary)
		})
	}
	t.Run("diffid", func(t *testing.T) {
		wrong := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
		img := exWrapLayers(t, exImage(t, exLayerOf(t, "gzip", m.layer1)), func(_ int, l v1.Layer) v1.Layer { return &exHookLayer{Layer: l, diffID: &wrong} })
		target := filepath.Join(t.TempDir(), "out")
		err := Extract(context.Background(), img, target, ExtractOptions{})
		if err == nil || !strings.Contains(err.Error(), "diff ID") {
			t.Fatalf("Extract with a wrong diff ID: %v", err)
		}
		exNothingFinal(t, target)
	})
}

func TestExtractResume(t *testing.T) {
	m := exNewModel(t)
	good := exImage(t, exLayerOf(t, "gzip", m.layer1), exLayerOf(t, "zstd", m.layer2))
	ls, _ := good.Layers()
	d2, _ := ls[1].Digest()
	failing := exWrapLayers(t, good, func(i int, l v1.Layer) v1.Layer {
		if i == 1 {
			return &exHookLayer{Layer: l, failAfter: 100 << 10}
		}
		return l
	})
	target := filepath.Join(t.TempDir(), "out")
	err := Extract(context.Background(), failing, target, ExtractOptions{Jobs: 1})
	if !errors.Is(err, errExInjected) || !strings.Contains(err.Error(), d2.String()) {
		t.Fatalf("first Extract: %v, want the injected error naming %s", err, d2)
	}
	// Layer 1 is complete, layer 2 left nothing under a final name.
	got := exReadTree(t, target)
	if got["config.json"] != m.want["config.json"] {
		t.Errorf("config.json after the failed run: %q", got["config.json"])
	}
	if _, ok := got["model.safetensors"]; ok {
		t.Error("model.safetensors exists after its layer failed")
	}
	if _, ok := got[extractStateName]; ok {
		t.Errorf("%s inside the target", extractStateName)
	}
	if _, err := os.Stat(exStatePath(t, target)); err != nil {
		t.Fatalf("no resume state beside the target after a failed run: %v", err)
	}
	// A partial file a killed run would leave is swept on resume.
	stale := filepath.Join(target, ".model.safetensors.1-1"+extractPartialSuffix)
	if err := os.WriteFile(stale, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Another image may not resume this directory.
	other := exImage(t, exLayerOf(t, "tar", exTar(t, exFile("models/x", "x"))))
	if err := Extract(context.Background(), other, target, ExtractOptions{}); err == nil || !strings.Contains(err.Error(), "holds a pull (1 layers extracted) of") {
		t.Errorf("Extract of another image into a partial dir: %v", err)
	}
	// Nor may the same image with another prefix.
	if err := Extract(context.Background(), good, target, ExtractOptions{Prefix: "/"}); err == nil {
		t.Error("Extract with another prefix into a partial dir succeeded")
	}

	var reads [2]atomic.Int32
	counted := exWrapLayers(t, good, func(i int, l v1.Layer) v1.Layer { return &exHookLayer{Layer: l, reads: &reads[i]} })
	if err := Extract(context.Background(), counted, target, ExtractOptions{Jobs: 2}); err != nil {
		t.Fatalf("resumed Extract: %v", err)
	}
	if n := reads[0].Load(); n != 0 {
		t.Errorf("layer 1 read %d times on resume, want 0", n)
	}
	if n := reads[1].Load(); n != 1 {
		t.Errorf("layer 2 read %d times on resume, want 1", n)
	}
	exAssertTree(t, target, m.want)
}

func exStatePath(t *testing.T, dir string) string {
	t.Helper()
	p, err := PullStatePath(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExtractStateBesideTarget: the resume state and the stamp of a
// complete pull live beside the target (PARENT/.NAME.modelcar-pull.json),
// so a completed pull leaves the target holding the model alone, and
// pulling it again reads nothing. A pull an older modelcar began with its
// state inside the target resumes from there and moves it out; a target
// whose parent cannot hold the state (here a name too long for the state
// file's) keeps it inside and still resumes.
func TestExtractStateBesideTarget(t *testing.T) {
	m := exNewModel(t)
	good := exImage(t, exLayerOf(t, "gzip", m.layer1), exLayerOf(t, "tar", m.layer2))
	failing := exWrapLayers(t, good, func(i int, l v1.Layer) v1.Layer {
		if i == 1 {
			return &exHookLayer{Layer: l, failAfter: 100 << 10}
		}
		return l
	})
	resume := func(target string) {
		t.Helper()
		var reads [2]atomic.Int32
		counted := exWrapLayers(t, good, func(i int, l v1.Layer) v1.Layer { return &exHookLayer{Layer: l, reads: &reads[i]} })
		if err := Extract(context.Background(), counted, target, ExtractOptions{Jobs: 1}); err != nil {
			t.Fatalf("resumed Extract: %v", err)
		}
		if reads[0].Load() != 0 || reads[1].Load() != 1 {
			t.Errorf("resume read layers %d and %d times, want 0 and 1", reads[0].Load(), reads[1].Load())
		}
	}

	target := filepath.Join(t.TempDir(), "llama")
	if err := Extract(context.Background(), good, target, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	exAssertTree(t, target, m.want) // nothing but the model
	b, err := os.ReadFile(filepath.Join(filepath.Dir(target), ".llama"+extractStateName))
	if err != nil || !strings.Contains(string(b), `"layers":["sha256:`) {
		t.Fatalf("the stamp beside the target: %q, %v", b, err)
	}
	var reads [2]atomic.Int32
	counted := exWrapLayers(t, good, func(i int, l v1.Layer) v1.Layer { return &exHookLayer{Layer: l, reads: &reads[i]} })
	if err := Extract(context.Background(), counted, target, ExtractOptions{}); err != nil || reads[0].Load()+reads[1].Load() != 0 {
		t.Errorf("pulling a complete target again: %v, %d layer reads", err, reads[0].Load()+reads[1].Load())
	}

	// Begun by an older modelcar: the state inside the target.
	legacy := filepath.Join(t.TempDir(), "old")
	if err := Extract(context.Background(), failing, legacy, ExtractOptions{Jobs: 1}); !errors.Is(err, errExInjected) {
		t.Fatalf("first Extract: %v", err)
	}
	if err := os.Rename(exStatePath(t, legacy), filepath.Join(legacy, extractStateName)); err != nil {
		t.Fatal(err)
	}
	resume(legacy)
	exAssertTree(t, legacy, m.want)
	if _, err := os.Stat(exStatePath(t, legacy)); err != nil {
		t.Errorf("the state did not move beside the target: %v", err)
	}

	// No room beside the target: the state stays inside, and resumes.
	long := filepath.Join(t.TempDir(), strings.Repeat("m", 250))
	if err := Extract(context.Background(), failing, long, ExtractOptions{Jobs: 1}); !errors.Is(err, errExInjected) {
		t.Fatalf("first Extract into %s: %v", long, err)
	}
	if _, err := os.Stat(filepath.Join(long, extractStateName)); err != nil {
		t.Fatalf("no state inside a target whose parent cannot hold it: %v", err)
	}
	resume(long)
	if got := exReadTree(t, long); got["config.json"] != m.want["config.json"] || got[extractStateName] == "" {
		t.Errorf("after resume: %d files; the stamp inside: %v", len(got), got[extractStateName] != "")
	}
}

// With parallel layers, a failing layer leaves the layers before it
// complete, and resume finishes the job.
func TestExtractResumeParallel(t *testing.T) {
	parts := make([][]byte, 4)
	want := map[string]string{}
	for i := range parts {
		name := fmt.Sprintf("part-%d.bin", i)
		body := strings.Repeat(fmt.Sprint(i), 300<<10)
		parts[i] = exTar(t, exFile("models/"+name, body))
		want[name] = body
	}
	layers := make([]v1.Layer, len(parts))
	for i, p := range parts {
		layers[i] = exLayerOf(t, "gzip", p)
	}
	good := exImage(t, layers...)
	failing := exWrapLayers(t, good, func(i int, l v1.Layer) v1.Layer {
		if i == 2 {
			return &exHookLayer{Layer: l, failAfter: 1000}
		}
		return &exHookLayer{Layer: l, delay: 20 * time.Millisecond}
	})
	target := filepath.Join(t.TempDir(), "out")
	if err := Extract(context.Background(), failing, target, ExtractOptions{Jobs: 4}); !errors.Is(err, errExInjected) {
		t.Fatalf("first Extract: %v, want the injected error", err)
	}
	got := exReadTree(t, target)
	for i := range 2 {
		name := fmt.Sprintf("part-%d.bin", i)
		if got[name] != want[name] {
			t.Errorf("%s incomplete after layer 3 failed", name)
		}
	}
	for i := 2; i < 4; i++ {
		if _, ok := got[fmt.Sprintf("part-%d.bin", i)]; ok {
			t.Errorf("part-%d.bin committed although layer 3 failed", i)
		}
	}
	var reads [4]atomic.Int32
	counted := exWrapLayers(t, good, func(i int, l v1.Layer) v1.Layer { return &exHookLayer{Layer: l, reads: &reads[i]} })
	if err := Extract(context.Background(), counted, target, ExtractOptions{Jobs: 4}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int32{0, 0, 1, 1} {
		if n := reads[i].Load(); n != want {
			t.Errorf("layer %d read %d times on resume, want %d", i+1, n, want)
		}
	}
	exAssertTree(t, target, want)
}

func TestExtractRefusesNonEmptyDir(t *testing.T) {
	m := exNewModel(t)
	img := exImage(t, exLayerOf(t, "tar", m.layer1))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Extract(context.Background(), img, dir, ExtractOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Extract into a non-empty dir: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "README")); string(b) != "mine" {
		t.Error("README changed")
	}
}

func TestExtractCanceled(t *testing.T) {
	m := exNewModel(t)
	img := exImage(t, exLayerOf(t, "gzip", m.layer1), exLayerOf(t, "gzip", m.layer2))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	target := filepath.Join(t.TempDir(), "out")
	if err := Extract(ctx, img, target, ExtractOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Extract with a canceled context: %v", err)
	}
	exNothingFinal(t, target)
	if err := Extract(context.Background(), img, target, ExtractOptions{}); err != nil {
		t.Fatalf("resume after cancel: %v", err)
	}
	exAssertTree(t, target, m.want)
}

// A symlink committed by an earlier layer is never written through by a
// later one.
func TestExtractNoWriteThroughEarlierSymlink(t *testing.T) {
	l1 := exTar(t, exDir("models/sub/"), exSymlink("models/ln", "sub"))
	l2 := exTar(t, exFile("models/ln/evil", "evil"))
	for _, jobs := range []int{1, 2} {
		parent, target, canary := exSandbox(t)
		img := exImage(t, exLayerOf(t, "tar", l1), exLayerOf(t, "tar", l2))
		err := Extract(context.Background(), img, target, ExtractOptions{Jobs: jobs})
		// Sequentially, layer 2 refuses to write through the symlink; in
		// parallel, layer 2 may create a real directory ln first, and then
		// layer 1 refuses to replace it.
		if err == nil || !strings.Contains(err.Error(), "models/ln") {
			t.Errorf("jobs %d: %v, want an error naming models/ln", jobs, err)
		}
		exAssertSandbox(t, parent, target, canary)
	}
}

func TestExtractLayerSymlinkStoredClean(t *testing.T) {
	dir := t.TempDir()
	tb := exTar(t, exDir("models/d/"), exSymlink("models/d/l1", ".."), exSymlink("models/l2", "d/l1/../.."), exSymlink("models/l3", "./d//../d/l1"))
	if err := ExtractLayer(context.Background(), bytes.NewReader(tb), dir, "/models"); err != nil {
		t.Fatal(err)
	}
	exAssertTree(t, dir, map[string]string{"d": "/", "d/l1": "-> ..", "l2": "-> .", "l3": "-> d/l1"})
}

func TestExtractLayerDirModes(t *testing.T) {
	dir := t.TempDir()
	tb := exTar(t,
		exEntry{name: "models/locked/", typ: tar.TypeDir, mode: 0o400},
		exFile("models/locked/f", "x"),
		exEntry{name: "models/wide/", typ: tar.TypeDir, mode: 0o7777},
		exEntry{name: "models/suid", typ: tar.TypeReg, body: []byte("x"), mode: 0o6777},
	)
	if err := ExtractLayer(context.Background(), bytes.NewReader(tb), dir, ""); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{"locked": 0o700, "wide": 0o755, "suid": 0o644} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); got&^want != 0 {
			t.Errorf("%s: mode %v, want at most %v", name, got, want)
		}
	}
}
