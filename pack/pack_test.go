package pack_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/opencontainers/go-digest"

	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// genModel writes a small generated model into a temp dir.
func genModel(t testing.TB, seed int64, size int64, shards int) *testmodel.Model {
	t.Helper()
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: seed, TotalSize: size, Shards: shards})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func packT(t testing.TB, dir, out string, opts ...pack.Option) *pack.Result {
	t.Helper()
	opts = append([]pack.Option{pack.WithCacheDir(t.TempDir())}, opts...)
	res, err := push.Pack(context.Background(), dir, out, opts)
	if err != nil {
		t.Fatalf("Pack(%s, %s): %v", dir, out, err)
	}
	return res
}

// packBaseT packs dir onto the image base, as `modelcar pack --base` does
// (the transfer layer opens the base).
func packBaseT(t testing.TB, dir, out, base string, opts ...pack.Option) *pack.Result {
	t.Helper()
	opts = append([]pack.Option{pack.WithCacheDir(t.TempDir())}, opts...)
	res, err := push.Pack(context.Background(), dir, out, opts, push.WithBase(base))
	if err != nil {
		t.Fatalf("Pack(%s, %s, base %s): %v", dir, out, base, err)
	}
	return res
}

func fileSums(t testing.TB, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		s := sha256.Sum256(b)
		sums[filepath.ToSlash(rel)] = hex.EncodeToString(s[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

// layerFiles reads a layer's uncompressed tar and returns the sha256 of
// each regular file under models/, in tar order.
func layerFiles(t testing.TB, l v1.Layer) (names []string, sums map[string]string) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sums = map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || !strings.HasPrefix(h.Name, "models/") {
			continue
		}
		if h.Uid != 0 || h.Gid != 0 || h.Mode != 0o644 || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: metadata not normalized: uid %d gid %d mode %o mtime %v", h.Name, h.Uid, h.Gid, h.Mode, h.ModTime)
		}
		hs := sha256.New()
		if _, err := io.Copy(hs, tr); err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(h.Name, "models/")
		names = append(names, rel)
		sums[rel] = hex.EncodeToString(hs.Sum(nil))
	}
	return names, sums
}

func TestPackFormatsRoundTrip(t *testing.T) {
	m := genModel(t, 1, 6<<20, 3)
	want := fileSums(t, m.Dir)
	for _, f := range pack.Formats {
		t.Run(string(f), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "oci")
			res := packT(t, m.Dir, "oci:"+out+":v1", pack.WithFormat(f))
			if res.Reference != "oci:"+out+"@"+res.Digest.String() || res.Tagged != "oci:"+out+":v1" {
				t.Errorf("Reference = %q, Tagged = %q", res.Reference, res.Tagged)
			}
			img, mf, layers := layoutImage(t, out, res.Digest)
			if len(layers) != 1+len(m.Shards) {
				t.Fatalf("%d layers, want %d (small files + one per shard)", len(layers), 1+len(m.Shards))
			}
			got := map[string]string{}
			for i, l := range layers {
				names, sums := layerFiles(t, l)
				for k, v := range sums {
					got[k] = v
				}
				desc := mf.Layers[i]
				if desc.MediaType != f.MediaType() {
					t.Errorf("layer %d media type %s, want %s", i, desc.MediaType, f.MediaType())
				}
				if title := desc.Annotations[pack.AnnotationTitle]; title != strings.Join(names, ",") {
					t.Errorf("layer %d title %q, files %q", i, title, names)
				}
				if i == 0 {
					for _, n := range names {
						if strings.HasSuffix(n, ".safetensors") {
							t.Errorf("first layer holds weights %s", n)
						}
					}
				} else if names[0] != m.Shards[i-1] {
					t.Errorf("layer %d holds %v, want shard %s (index order)", i, names, m.Shards[i-1])
				}
				if f == pack.FormatEstargz || f == pack.FormatZstdChunked {
					verifyTOC(t, l, desc, f, i == 0, names)
				}
			}
			if len(got) != len(want) {
				t.Errorf("image has %d files, model has %d", len(got), len(want))
			}
			// bf16-like weights compress to about 0.78 with entropy coding;
			// a format storing them raw has lost its point.
			var packed int64
			for _, l := range res.Layers {
				packed += l.Size
			}
			if ratio := float64(packed) / float64(m.Size); f != pack.FormatTar && ratio > 0.85 {
				t.Errorf("%s layers are %.2f of the model size", f, ratio)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s differs in the image", k)
				}
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.OS != "linux" || cfg.Architecture != "amd64" || len(cfg.RootFS.DiffIDs) != len(layers) {
				t.Errorf("config: os %q arch %q diffIDs %d", cfg.OS, cfg.Architecture, len(cfg.RootFS.DiffIDs))
			}
		})
	}
}

// layoutImage opens the image with digest h in the OCI layout at dir, with
// its manifest and layers.
func layoutImage(t *testing.T, dir string, h v1.Hash) (v1.Image, *v1.Manifest, []v1.Layer) {
	t.Helper()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(h)
	if err != nil {
		t.Fatal(err)
	}
	mf, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return img, mf, layers
}

// verifyTOC opens a lazy-pull layer with the estargz reader, checks its TOC
// digest against the annotation, verifies every chunk, and that the small
// files sit before the prefetch landmark.
func verifyTOC(t *testing.T, l v1.Layer, desc v1.Descriptor, f pack.Format, small bool, names []string) {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var opts []estargz.OpenOption
	if f == pack.FormatZstdChunked {
		opts = append(opts, estargz.WithDecompressors(new(zstdchunked.Decompressor)))
	}
	r, err := estargz.Open(io.NewSectionReader(bytes.NewReader(b), 0, int64(len(b))), opts...)
	if err != nil {
		t.Fatalf("estargz.Open: %v", err)
	}
	tocDigest, err := digest.Parse(desc.Annotations[pack.AnnotationTOCDigest])
	if err != nil {
		t.Fatalf("TOC digest annotation: %v", err)
	}
	v, err := r.VerifyTOC(tocDigest)
	if err != nil {
		t.Fatalf("VerifyTOC: %v", err)
	}
	for _, n := range names {
		e, ok := r.Lookup("models/" + n)
		if !ok {
			t.Fatalf("TOC lacks models/%s", n)
		}
		sr, err := r.OpenFile("models/" + n)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, sr); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verifier(e); err != nil {
			t.Errorf("verifier for %s: %v", n, err)
		}
	}
	landmark := estargz.NoPrefetchLandmark
	if small {
		landmark = estargz.PrefetchLandmark
	}
	if _, ok := r.Lookup(landmark); !ok {
		t.Errorf("layer lacks %s", landmark)
	}
	if desc.Annotations[pack.AnnotationUncompressedSize] == "" {
		t.Errorf("layer lacks %s", pack.AnnotationUncompressedSize)
	}
	if f == pack.FormatZstdChunked && desc.Annotations[pack.AnnotationZstdChunkedSum] == "" {
		t.Errorf("layer lacks %s", pack.AnnotationZstdChunkedSum)
	}
}

// With PrefetchAll every layer of a lazy format puts its files before the
// prefetch landmark, weights included, so the snapshotter streams whole
// layers at mount; the default keeps weights out of the prefetch. Other
// formats refuse it.
func TestPackPrefetchAll(t *testing.T) {
	m := genModel(t, 2, 3<<20, 2)
	for _, f := range []pack.Format{pack.FormatEstargz, pack.FormatZstdChunked} {
		t.Run(string(f), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "oci")
			all := packT(t, m.Dir, "oci:"+out+":all", pack.WithFormat(f), pack.WithPrefetch(pack.PrefetchAll))
			small := packT(t, m.Dir, "oci:"+out+":small", pack.WithFormat(f))
			if all.Digest == small.Digest {
				t.Fatal("--prefetch all made the same image as the default")
			}
			_, mf, layers := layoutImage(t, out, all.Digest)
			for i, l := range layers {
				names, _ := layerFiles(t, l)
				verifyTOC(t, l, mf.Layers[i], f, true, names)
			}
		})
	}
	_, err := push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "x"), []pack.Option{pack.WithPrefetch(pack.PrefetchAll)})
	if err == nil || !strings.Contains(err.Error(), "estargz or zstd-chunked") {
		t.Fatalf("tar with PrefetchAll: %v", err)
	}
	if _, err := push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "y"), []pack.Option{pack.WithPrefetch("most")}); err == nil || !strings.Contains(err.Error(), `"most"`) {
		t.Fatalf("unknown prefetch: %v", err)
	}
}

// copyModel copies src to dst with the given mtime on every file, listing
// files in reverse to vary creation order.
func copyModel(t testing.TB, src, dst string, mtime time.Time) {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for i := len(ents) - 1; i >= 0; i-- {
		b, err := os.ReadFile(filepath.Join(src, ents[i].Name()))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dst, ents[i].Name())
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPackReproducible(t *testing.T) {
	m := genModel(t, 2, 4<<20, 2)
	a := filepath.Join(t.TempDir(), "first", "copy")
	b := filepath.Join(t.TempDir(), "elsewhere", "deeper", "model")
	copyModel(t, m.Dir, a, time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC))
	copyModel(t, m.Dir, b, time.Date(2025, 6, 7, 8, 9, 10, 11, time.UTC))
	for _, f := range pack.Formats {
		t.Run(string(f), func(t *testing.T) {
			prev := runtime.GOMAXPROCS(1)
			r1 := packT(t, a, "oci:"+filepath.Join(t.TempDir(), "o1"), pack.WithFormat(f), pack.WithJobs(1))
			runtime.GOMAXPROCS(4)
			r2 := packT(t, b, "oci-archive:"+filepath.Join(t.TempDir(), "o2.tar"), pack.WithFormat(f), pack.WithJobs(3))
			runtime.GOMAXPROCS(prev)
			if r1.Digest != r2.Digest {
				t.Errorf("digests differ: %s vs %s", r1.Digest, r2.Digest)
			}
			r3 := packT(t, a, "oci:"+filepath.Join(t.TempDir(), "o3"), pack.WithFormat(f), pack.WithEpoch(time.Unix(1700000000, 0)))
			if r3.Digest == r1.Digest {
				t.Errorf("a different epoch gave the same digest")
			}
		})
	}
}

func TestPackReusesLayersFromDigestCache(t *testing.T) {
	m := genModel(t, 3, 4<<20, 2)
	out := "oci:" + filepath.Join(t.TempDir(), "oci")
	cache := pack.WithCacheDir(t.TempDir())
	r1, err := push.Pack(context.Background(), m.Dir, out, []pack.Option{cache})
	if err != nil {
		t.Fatal(err)
	}
	var read int64
	r2, err := push.Pack(context.Background(), m.Dir, out, []pack.Option{cache, pack.WithProgress(func(e pack.ProgressEvent) { read += e.Read })})
	if err != nil {
		t.Fatal(err)
	}
	if r1.Digest != r2.Digest {
		t.Fatalf("re-pack changed digest")
	}
	for _, l := range r2.Layers {
		if !l.Reused {
			t.Errorf("layer %v was rebuilt", l.Files)
		}
	}
	if read != 0 {
		t.Errorf("re-pack read %d bytes", read)
	}
	// Touching a shard rebuilds only its layer (same bytes, same digest).
	now := time.Now()
	if err := os.Chtimes(filepath.Join(m.Dir, m.Shards[0]), now, now); err != nil {
		t.Fatal(err)
	}
	r3, err := push.Pack(context.Background(), m.Dir, out, []pack.Option{cache})
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := 0
	for _, l := range r3.Layers {
		if !l.Reused {
			rebuilt++
			if l.Files[0] != m.Shards[0] {
				t.Errorf("rebuilt %v", l.Files)
			}
		}
	}
	if rebuilt != 1 || r3.Digest != r1.Digest {
		t.Errorf("rebuilt %d layers, digest %s (want 1, %s)", rebuilt, r3.Digest, r1.Digest)
	}
}

// writeHFCache is m.WriteHFCache, failing the test on error.
func writeHFCache(t *testing.T, m *testmodel.Model, cache, repo, commit string, refs ...string) string {
	t.Helper()
	snap, err := m.WriteHFCache(cache, repo, commit, refs...)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func TestPackHuggingFaceCacheSnapshot(t *testing.T) {
	m := genModel(t, 4, 2<<20, 2)
	snap := writeHFCache(t, m, t.TempDir(), "org/name", "0123abcd")
	// A download lock and a git dir are left out by default.
	os.WriteFile(filepath.Join(snap, "x.lock"), nil, 0o644)
	os.MkdirAll(filepath.Join(snap, ".git"), 0o755)
	os.WriteFile(filepath.Join(snap, ".git", "HEAD"), []byte("ref"), 0o644)

	direct := packT(t, m.Dir, "oci:"+filepath.Join(t.TempDir(), "a"))
	linked := packT(t, snap, "oci:"+filepath.Join(t.TempDir(), "b"))
	if direct.Digest != linked.Digest {
		t.Errorf("snapshot packs to %s, plain copy to %s", linked.Digest, direct.Digest)
	}
}

// TestResolveHF: hf:ORG/NAME[@REVISION] finds the snapshot through a ref or
// by commit, and says what the cache has when it cannot.
func TestResolveHF(t *testing.T) {
	m := genModel(t, 5, 1<<20, 1)
	cache := t.TempDir()
	commit := strings.Repeat("ab", 20)
	snap := writeHFCache(t, m, cache, "Org/Model-7B", commit, "main", "v1.0")
	// A pull request's refs live in a directory, refs/pr/N.
	if err := os.MkdirAll(filepath.Join(cache, "models--Org--Model-7B", "refs", "pr"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"hf:Org/Model-7B", "hf:Org/Model-7B@main", "hf:Org/Model-7B@v1.0", "hf:Org/Model-7B@" + commit} {
		got, err := pack.ResolveHF(s, cache)
		if err != nil || got.Dir != snap || got.Commit != commit || got.Repo != "Org/Model-7B" {
			t.Errorf("ResolveHF(%s) = %+v, %v; want %s", s, got, err, snap)
		}
	}
	// A ref that is 1 GiB (sparse) or a FIFO is not read without bound, or
	// waited on.
	writeHFCache(t, m, cache, "Org/Hostile", commit)
	refs := filepath.Join(cache, "models--Org--Hostile", "refs")
	if f, err := os.Create(filepath.Join(refs, "huge")); err != nil || f.Truncate(1<<30) != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
	if err := syscall.Mkfifo(filepath.Join(refs, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := strings.Repeat("cd", 20)
	for _, tc := range []struct{ s, want string }{
		{"hf:Org/Other", "hf:Org/Other: not in the Hugging Face cache " + cache + " (download it first: hf download Org/Other"},
		{"hf:Org/Model-7B@dev", `revision "dev" is not in the cache (has: commit ` + commit + ", ref main, ref v1.0)"},
		{"hf:Org/Model-7B@" + other, "commit " + other + " has no snapshot in the cache"},
		{"hf:Model-7B", "want hf:ORG/NAME[@REVISION]"},
		{"hf:Org/Model-7B@", "want hf:ORG/NAME[@REVISION]"},
		{"hf:Org/Model-7B@../../x", "want hf:ORG/NAME[@REVISION]"},
		{"hf:Org/Model-7B@/main", "want hf:ORG/NAME[@REVISION]"},
		{"hf:Org/Model-7B@./main", "want hf:ORG/NAME[@REVISION]"},
		{"hf:Org/Model-7B@pr", `revision "pr" is not in the cache`},
		{"hf:Org/Hostile@huge", "refs/huge is over 1024 bytes, not a file holding a commit hash"},
		{"hf:Org/Hostile@fifo", "refs/fifo is a named pipe, not a file holding a commit hash"},
	} {
		done := make(chan error, 1)
		go func() { _, err := pack.ResolveHF(tc.s, cache); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ResolveHF(%s): %v, want an error with %q", tc.s, err, tc.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("ResolveHF(%s) still waiting after 10s", tc.s)
		}
	}
}

func TestPackIncludeExclude(t *testing.T) {
	m := genModel(t, 5, 2<<20, 2)
	os.WriteFile(filepath.Join(m.Dir, "README.md"), []byte("# model"), 0o644)
	os.MkdirAll(filepath.Join(m.Dir, "original"), 0o755)
	os.WriteFile(filepath.Join(m.Dir, "original", "params.json"), []byte("{}"), 0o644)
	res := packT(t, m.Dir, "oci:"+filepath.Join(t.TempDir(), "a"), pack.WithExclude("original/", "*.md"))
	for _, l := range res.Layers {
		for _, f := range l.Files {
			if f == "README.md" || strings.HasPrefix(f, "original/") {
				t.Errorf("excluded file %s packed", f)
			}
		}
	}
	res = packT(t, m.Dir, "oci:"+filepath.Join(t.TempDir(), "b"), pack.WithInclude("config.json", "tokenizer*"))
	if len(res.Layers) != 1 || len(res.Layers[0].Files) != 3 {
		t.Errorf("--include *.json packed %+v", res.Layers)
	}
	// Leaving out shards that the index names is caught by validation.
	_, err := push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "c"), []pack.Option{pack.WithInclude("*.json")})
	if err == nil || !strings.Contains(err.Error(), "model.safetensors.index.json") {
		t.Errorf("--include *.json without shards: %v", err)
	}
}

// assertNoOutput checks that a failed pack left nothing in parent.
func assertNoOutput(t *testing.T, parent string) {
	t.Helper()
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		t.Errorf("failed pack left %s", e.Name())
	}
}

func TestPackBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
		break_           func(t *testing.T, m *testmodel.Model)
	}{
		{"truncated shard", "model-00002-of-00002.safetensors", "", func(t *testing.T, m *testmodel.Model) {
			p := filepath.Join(m.Dir, m.Shards[1])
			st, _ := os.Stat(p)
			if err := os.Truncate(p, st.Size()-100); err != nil {
				t.Fatal(err)
			}
		}},
		{"corrupt header", "model-00001-of-00002.safetensors", "", func(t *testing.T, m *testmodel.Model) {
			f, err := os.OpenFile(filepath.Join(m.Dir, m.Shards[0]), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("{\"x"), 8)
			f.Close()
		}},
		{"index names a missing shard", "model.safetensors.index.json", "model-00002-of-00002.safetensors", func(t *testing.T, m *testmodel.Model) {
			os.Remove(filepath.Join(m.Dir, m.Shards[1]))
		}},
		{"symlink to a directory", "weights", "which is a directory, not a regular file", func(t *testing.T, m *testmodel.Model) {
			os.Mkdir(filepath.Join(m.Dir, "elsewhere"), 0o755)
			os.Symlink("elsewhere", filepath.Join(m.Dir, "weights"))
		}},
		{"symlink outside the model", "weights", "points outside the model directory", func(t *testing.T, m *testmodel.Model) {
			os.WriteFile(filepath.Join(m.Dir, "..", "elsewhere"), []byte("secret"), 0o644)
			os.Symlink("../elsewhere", filepath.Join(m.Dir, "weights"))
		}},
		{"invalid json", "config.json", "", func(t *testing.T, m *testmodel.Model) {
			os.WriteFile(filepath.Join(m.Dir, "config.json"), []byte(`{"a": 1,`), 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := genModel(t, 6, 1<<20, 2)
			tc.break_(t, m)
			for _, out := range []string{"oci:%s/out", "oci-archive:%s/out.tar"} {
				parent := t.TempDir()
				_, err := push.Pack(context.Background(), m.Dir, strings.ReplaceAll(out, "%s", parent), []pack.Option{pack.WithCacheDir("")})
				if err == nil {
					t.Fatal("pack succeeded")
				}
				var ie *pack.InputError
				if !errors.As(err, &ie) || ie.File != tc.file {
					t.Errorf("error %q does not name %s", err, tc.file)
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %q lacks %q", err, tc.want)
				}
				assertNoOutput(t, parent)
			}
		})
	}
}

func TestPackMaxLayerSizeFailsEarly(t *testing.T) {
	m := genModel(t, 7, 2<<20, 2)
	parent := t.TempDir()
	_, err := push.Pack(context.Background(), m.Dir, "oci:"+parent+"/out", []pack.Option{pack.WithMaxLayerSize(512 << 10), pack.WithCacheDir("")})
	var ie *pack.InputError
	if !errors.As(err, &ie) || !strings.Contains(ie.File, ".safetensors") || !strings.Contains(err.Error(), "max-layer-size") {
		t.Fatalf("err = %v", err)
	}
	assertNoOutput(t, parent)
}

func TestPackUpdatesExistingLayoutKeepingOtherTags(t *testing.T) {
	a := genModel(t, 8, 1<<20, 2)
	b := genModel(t, 9, 1<<20, 2)
	out := filepath.Join(t.TempDir(), "oci")
	ra := packT(t, a.Dir, "oci:"+out+":a")
	rb := packT(t, b.Dir, "oci:"+out+":b", pack.WithTags("b2"))
	for tag, want := range map[string]v1.Hash{"a": ra.Digest, "b": rb.Digest, "b2": rb.Digest} {
		info, err := push.Inspect(context.Background(), "oci:"+out+":"+tag, v1.Platform{OS: "linux", Architecture: "amd64"})
		if err != nil {
			t.Fatal(err)
		}
		if info.Digest != want {
			t.Errorf("tag %s -> %s, want %s", tag, info.Digest, want)
		}
	}
	if _, err := os.Stat(filepath.Join(out, ".modelcar-partial")); !os.IsNotExist(err) {
		t.Errorf("temporary directory left in layout")
	}
	// A non-empty directory that is not a layout is refused.
	junk := t.TempDir()
	os.WriteFile(filepath.Join(junk, "keep.txt"), []byte("mine"), 0o644)
	if _, err := push.Pack(context.Background(), a.Dir, "oci:"+junk, nil); err == nil || !strings.Contains(err.Error(), "not an OCI image layout") {
		t.Errorf("packing into a non-layout dir: %v", err)
	}
}

// TestPackKeepsAFileAtTheLayoutPath: oci:PATH where PATH is a file (say,
// an archive given the wrong prefix) is refused, and the file is kept.
func TestPackKeepsAFileAtTheLayoutPath(t *testing.T) {
	m := genModel(t, 25, 1<<20, 1)
	path := filepath.Join(t.TempDir(), "model.tar")
	if err := os.WriteFile(path, []byte("important"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := push.Pack(context.Background(), m.Dir, "oci:"+path, []pack.Option{pack.WithCacheDir("")})
	if err == nil || !strings.Contains(err.Error(), "exists and is not a directory (an archive is written with oci-archive:") {
		t.Fatalf("pack onto a file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "important" {
		t.Fatalf("the file at the output path was changed: %q, %v", b, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
}
