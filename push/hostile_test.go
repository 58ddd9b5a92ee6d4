package push_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/modelcar/modelcar/internal/limits"
	"github.com/modelcar/modelcar/internal/ocilayout"
	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/push"
)

// Hostile inputs: images, layouts and registries crafted to cost modelcar
// unbounded memory, disk or time, or to make it accept what it never
// checked. Each logs one FAULT line (suite "untrusted") that make
// test-faults counts; operations whose memory matters run in a child
// process (TestChildOp) that reports its peak RSS.

// logHostile writes the FAULT line of one hostile input and fails the test
// if bytes were lost (a tag or file claiming content it does not hold).
func logHostile(t *testing.T, name, outcome string, lost int64, extra ...string) {
	t.Helper()
	t.Logf("FAULT name=untrusted/%s outcome=%s bytes_lost=%d%s", name, outcome, lost, strings.Join(append([]string{""}, extra...), " "))
	if lost != 0 {
		t.Errorf("%s: %d bytes lost", name, lost)
	}
}

// childEnv carries a childOp to TestChildOp.
const childEnv = "MODELCAR_HOSTILE_CHILD"

// childOp is an operation run in a child process, so that its peak memory
// is its own and a hang or a runaway allocation cannot take the test
// binary down.
type childOp struct {
	Op      string `json:"op"` // pull, verify, mirror, inspect, inspect-layers (listing each layer's files)
	Src     string `json:"src"`
	Dst     string `json:"dst,omitempty"`     // pull: the directory; mirror: the destination
	Against string `json:"against,omitempty"` // verify: the model directory
	Jobs    int    `json:"jobs,omitempty"`
	// MaxRSS and Timeout stop the child (default 1 GiB, 60 s): what
	// the code under test failed to bound.
	MaxRSS  int64         `json:"maxRSS,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

// childResult is what the child reports.
type childResult struct {
	Err string `json:"err"`
	// HWM is the child's peak RSS in bytes (VmHWM).
	HWM int64 `json:"hwm"`
	// Stopped is "memory" or "time" when the child was stopped.
	Stopped string `json:"stopped,omitempty"`
}

func (r childResult) String() string {
	s := fmt.Sprintf("peak RSS %s", limits.Bytes(r.HWM))
	if r.Stopped != "" {
		s += ", stopped for " + r.Stopped
	}
	if r.Err != "" {
		s += ", error: " + r.Err
	}
	return s
}

// runChild runs op in a child process (this test binary, TestChildOp).
func runChild(t *testing.T, op childOp) childResult {
	t.Helper()
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("peak memory is read from /proc/self/status")
	}
	spec, err := json.Marshal(op)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(op.Timeout, time.Minute)+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestChildOp$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "CHILDRESULT "); ok {
			var r childResult
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				t.Fatalf("child result %q: %v", rest, err)
			}
			return r
		}
	}
	t.Fatalf("child %s %s gave no result (%v):\n%s", op.Op, op.Src, err, out)
	return childResult{}
}

// TestChildOp is the child process of runChild; it skips when run otherwise.
func TestChildOp(t *testing.T) {
	spec := os.Getenv(childEnv)
	if spec == "" {
		t.Skip("the child process of the hostile-input tests")
	}
	var op childOp
	if err := json.Unmarshal([]byte(spec), &op); err != nil {
		t.Fatal(err)
	}
	if op.MaxRSS == 0 {
		op.MaxRSS = 1 << 30
	}
	if op.Timeout == 0 {
		op.Timeout = time.Minute
	}
	report := func(r childResult) {
		r.HWM = procStatus("VmHWM")
		b, _ := json.Marshal(r)
		fmt.Printf("\nCHILDRESULT %s\n", b)
		os.Exit(0)
	}
	go func() {
		deadline := time.Now().Add(op.Timeout)
		for range time.Tick(5 * time.Millisecond) {
			if procStatus("VmRSS") > op.MaxRSS {
				report(childResult{Stopped: "memory", Err: "stopped: RSS over " + limits.Bytes(op.MaxRSS)})
			}
			if time.Now().After(deadline) {
				report(childResult{Stopped: "time", Err: "stopped: still running after " + op.Timeout.String()})
			}
		}
	}()
	err := runOp(context.Background(), t, op)
	r := childResult{}
	if err != nil {
		r.Err = err.Error()
	}
	report(r)
}

// procStatus reads a "kB" field of /proc/self/status, in bytes.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// hLayer is a crafted layer: its blob as stored, and the diffID of what it
// decompresses to.
type hLayer struct {
	blob      []byte
	mediaType string
	diffID    digest.Digest
}

// hTarLayer is an uncompressed layer holding files under models/.
func hTarLayer(t testing.TB, files map[string]string) hLayer {
	b := hTar(t, files)
	return hLayer{blob: b, mediaType: ocispec.MediaTypeImageLayer, diffID: digest.FromBytes(b)}
}

func hTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: "models/" + name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// hZstdLayer is a zstd layer of a single frame, written by hand: it
// declares a window of 1<<windowLog bytes and holds raw (at most 128 KiB)
// followed by zeros zero bytes as RLE blocks of 128 KiB (4 bytes each),
// so a frame of a few KiB decompresses to hundreds of MiB.
func hZstdLayer(t testing.TB, windowLog int, raw []byte, zeros int64) hLayer {
	t.Helper()
	if len(raw) > 128<<10 || windowLog < 10 || windowLog > 41 {
		t.Fatalf("hZstdLayer: %d raw bytes, window log %d", len(raw), windowLog)
	}
	var b bytes.Buffer
	b.Write([]byte{0x28, 0xb5, 0x2f, 0xfd}) // magic
	b.WriteByte(0x00)                       // no content size, not single segment, no checksum, no dictionary
	b.WriteByte(byte((windowLog - 10) << 3))
	block := func(last bool, typ, size int) { // Block_Header: Last_Block, Block_Type, Block_Size
		v := size<<3 | typ<<1
		if last {
			v |= 1
		}
		b.Write([]byte{byte(v), byte(v >> 8), byte(v >> 16)})
	}
	block(zeros == 0, 0, len(raw)) // Raw_Block
	b.Write(raw)
	for left := zeros; left > 0; {
		n := min(left, 128<<10)
		left -= n
		block(left == 0, 1, int(n)) // RLE_Block of n zeros
		b.WriteByte(0)
	}
	h := sha256.New()
	h.Write(raw)
	io.CopyN(h, zeroReader{}, zeros)
	return hLayer{blob: b.Bytes(), mediaType: ocispec.MediaTypeImageLayerZstd, diffID: digest.NewDigest(digest.SHA256, h)}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// hImage is a crafted image in an OCI layout, tagged v1.
type hImage struct {
	dir      string
	manifest []byte
	desc     ocispec.Descriptor // the manifest's
	config   []byte
	layers   []ocispec.Descriptor
}

func (h *hImage) ref() string { return "oci:" + h.dir + ":v1" }

// hWriteImage writes an image of layers into a new layout at dir; edit,
// when set, changes the manifest before it is stored (sizes, media
// types...). index.json lists the manifest tagged v1 with the media type
// and size of desc as edit left them (see hTagAs to lie there too).
func hWriteImage(t testing.TB, dir string, layers []hLayer, edit func(*ocispec.Manifest)) *hImage {
	t.Helper()
	l, err := ocilayout.Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Cleanup()
	put := func(b []byte) digest.Digest {
		t.Helper()
		h, err := l.WriteBlob(b)
		if err != nil {
			t.Fatal(err)
		}
		return digest.Digest(h.String())
	}
	img := &hImage{dir: dir}
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers"}}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest}
	for _, hl := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, hl.diffID)
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: hl.mediaType, Digest: put(hl.blob), Size: int64(len(hl.blob))})
	}
	if img.config, err = json.Marshal(cfg); err != nil {
		t.Fatal(err)
	}
	m.Config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: put(img.config), Size: int64(len(img.config))}
	if edit != nil {
		edit(&m)
	}
	img.layers = m.Layers
	if img.manifest, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	img.desc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: put(img.manifest), Size: int64(len(img.manifest))}
	hTagAs(t, dir, img.desc)
	return img
}

// hTagAs makes index.json list desc (as given, lies included) tagged v1.
func hTagAs(t testing.TB, dir string, desc ocispec.Descriptor) {
	t.Helper()
	desc.Annotations = map[string]string{ocilayout.AnnotationRefName: "v1"}
	b, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{desc}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// hLayoutBlob is where a layout keeps the blob d.
func hLayoutBlob(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// TestHostileZstdWindow pulls and verifies images whose zstd layers are
// frames of a few KiB declaring a huge window and decompressing to
// hundreds of MiB of zeros. Decoders kept the whole window in memory
// (about 0.5 GiB a layer at zstd's default limit); now a window over a
// layer's share of limits.ZstdWindowBudget is refused with an error naming
// the layer, and one within it is decoded within it: peak memory of pull,
// verify (which decompresses to compare files) and mirror (which does not)
// stays under limits.MemoryBound at 8 parallel layers (the largest default
// --jobs), with more layers than jobs, and at one job with the whole budget.
func TestHostileZstdWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("decompresses about 3 GiB in child processes")
	}
	logOf := func(n uint64) int { // the largest window log within n
		l := 0
		for uint64(1)<<(l+1) <= n {
			l++
		}
		return l
	}
	for _, tc := range []struct {
		name         string
		jobs, layers int
		windowLog    int
		zeros        int64
		refused      bool
	}{
		{name: "window-256MiB", jobs: 8, layers: 8, windowLog: 28, zeros: 96 << 20, refused: true},
		{name: "window-at-the-limit", jobs: 8, layers: 16, windowLog: logOf(limits.ZstdWindow(8)), zeros: 40 << 20},
		{name: "window-at-the-limit-one-job", jobs: 1, layers: 3, windowLog: logOf(limits.ZstdWindow(1)), zeros: 140 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var layers []hLayer
			files := map[string]string{}
			for i := range tc.layers {
				name := fmt.Sprintf("shard-%d.txt", i)
				files[name] = "shard " + strconv.Itoa(i) + "\n"
				layers = append(layers, hZstdLayer(t, tc.windowLog, hTar(t, map[string]string{name: files[name]}), tc.zeros))
			}
			img := hWriteImage(t, filepath.Join(t.TempDir(), "oci"), layers, nil)
			model := filepath.Join(t.TempDir(), "model")
			if err := os.MkdirAll(model, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, body := range files {
				if err := os.WriteFile(filepath.Join(model, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, op := range []childOp{
				{Op: "pull", Src: img.ref(), Dst: filepath.Join(t.TempDir(), "pulled"), Jobs: tc.jobs},
				{Op: "verify", Src: img.ref(), Against: model, Jobs: tc.jobs},
				{Op: "mirror", Src: img.ref(), Dst: "oci:" + filepath.Join(t.TempDir(), "mirror") + ":v1", Jobs: tc.jobs},
				{Op: "inspect-layers", Src: img.ref(), Jobs: tc.jobs},
			} {
				if op.Op == "mirror" && tc.refused {
					continue // mirror copies layers as they are: nothing to refuse
				}
				r := runChild(t, op)
				t.Logf("%s: %s", op.Op, r)
				if r.HWM >= limits.MemoryBound || r.Stopped != "" {
					t.Errorf("%s: %s, want a peak under %s", op.Op, r, limits.Bytes(limits.MemoryBound))
				}
				outcome := survived
				if tc.refused {
					outcome = failedClearly
					if !strings.Contains(r.Err, "window") || !anyLayerNamed(r.Err, img.layers) {
						t.Errorf("%s: %v, want an error naming a layer and its window", op.Op, r.Err)
					}
				} else if r.Err != "" {
					t.Errorf("%s: %v", op.Op, r.Err)
				}
				logHostile(t, "zstd-"+tc.name+"/"+op.Op, outcome, 0, fmt.Sprintf("peak_rss_mib=%d", r.HWM>>20))
			}
		})
	}
}

// anyLayerNamed reports whether msg names one of layers by digest.
func anyLayerNamed(msg string, layers []ocispec.Descriptor) bool {
	for _, l := range layers {
		if strings.Contains(msg, l.Digest.String()) {
			return true
		}
	}
	return false
}

// hPadManifest pads the manifest m with an annotation so that it
// marshals to exactly n bytes.
func hPadManifest(t testing.TB, m *ocispec.Manifest, n int) {
	t.Helper()
	m.Annotations = map[string]string{"pad": ""}
	b, err := json.Marshal(m)
	if err != nil || len(b) > n {
		t.Fatalf("manifest of %d bytes (%v), want %d", len(b), err, n)
	}
	m.Annotations["pad"] = strings.Repeat("x", n-len(b))
}

// hConfigOfSize is hWriteImage's edit that replaces the config with one of
// exactly n bytes (a padded label), stored in the layout at dir.
func hConfigOfSize(t testing.TB, dir string, layers []hLayer, n int) func(*ocispec.Manifest) {
	return func(m *ocispec.Manifest) {
		t.Helper()
		cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers"},
			Config: ocispec.ImageConfig{Labels: map[string]string{"pad": ""}}}
		for _, l := range layers {
			cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.diffID)
		}
		b, err := json.Marshal(cfg)
		if err != nil || len(b) > n {
			t.Fatalf("config of %d bytes (%v), want %d", len(b), err, n)
		}
		cfg.Config.Labels["pad"] = strings.Repeat("x", n-len(b))
		if b, err = json.Marshal(cfg); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hLayoutBlob(dir, digest.FromBytes(b)), b, 0o644); err != nil {
			t.Fatal(err)
		}
		m.Config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(b), Size: int64(len(b))}
	}
}

// hArchive writes the layout at dir as an OCI archive and returns its
// reference (tag v1).
func hArchive(t testing.TB, dir string) string {
	t.Helper()
	file := dir + ".tar"
	if err := ocilayout.WriteArchive(dir, file); err != nil {
		t.Fatal(err)
	}
	return "oci-archive:" + file + ":v1"
}

// hRun runs op in this process and returns its error.
func hRun(t *testing.T, op childOp) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return runOp(ctx, t, op)
}

// runOp runs op (in this process) and returns its error.
func runOp(ctx context.Context, t *testing.T, op childOp) error {
	t.Helper()
	opts := []push.Option{push.WithPlainHTTP(true), push.WithStateDir(t.TempDir())}
	if op.Jobs > 0 {
		opts = append(opts, push.WithJobs(op.Jobs))
	}
	var err error
	switch op.Op {
	case "pull":
		_, err = push.Pull(ctx, op.Src, op.Dst, push.PullOptions{}, opts...)
	case "verify":
		_, err = push.Verify(ctx, op.Src, op.Against, "", opts...)
	case "mirror":
		_, err = push.Copy(ctx, op.Src, op.Dst, opts...)
	case "inspect":
		_, err = push.ReadImage(ctx, op.Src, v1.Platform{}, opts...)
	case "inspect-layers":
		_, err = push.ReadImage(ctx, op.Src, v1.Platform{}, append(opts, push.WithListFiles(""))...)
	default:
		t.Fatalf("unknown op %q", op.Op)
	}
	return err
}

// hOps are the four readers, each given src.
func hOps(t *testing.T, src string) []childOp {
	return []childOp{
		{Op: "pull", Src: src, Dst: filepath.Join(t.TempDir(), "pulled")},
		{Op: "inspect", Src: src},
		{Op: "mirror", Src: src, Dst: "oci:" + filepath.Join(t.TempDir(), "mirror") + ":v1"},
		{Op: "verify", Src: src},
	}
}

// TestHostileManifestLimit: a manifest or config of exactly
// limits.MaxManifestBytes is read by pull, inspect, mirror and verify, from
// a layout and an archive; one byte more is refused by all four, naming the
// document and the limit (verify and mirror read any size: 725 MiB of RSS
// for a 200 MB manifest). A 64 MiB manifest is refused by verify before it
// costs memory.
func TestHostileManifestLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 8 MiB documents 16 times")
	}
	layer := hTarLayer(t, map[string]string{"config.json": "{}"})
	for _, doc := range []string{"manifest", "config"} {
		for _, size := range []int{limits.MaxManifestBytes, limits.MaxManifestBytes + 1} {
			name := fmt.Sprintf("%s-%d", doc, size)
			dir := filepath.Join(t.TempDir(), "oci")
			var edit func(*ocispec.Manifest)
			if doc == "manifest" {
				edit = func(m *ocispec.Manifest) { hPadManifest(t, m, size) }
			} else {
				edit = hConfigOfSize(t, dir, []hLayer{layer}, size)
			}
			img := hWriteImage(t, dir, []hLayer{layer}, edit)
			what := img.desc.Digest.String()
			if doc == "config" {
				var m ocispec.Manifest
				json.Unmarshal(img.manifest, &m)
				what = m.Config.Digest.String()
			}
			for _, src := range []string{img.ref(), hArchive(t, dir)} {
				for _, op := range hOps(t, src) {
					t.Run(name+"/"+strings.Split(src, ":")[0]+"/"+op.Op, func(t *testing.T) {
						err := hRun(t, op)
						if size <= limits.MaxManifestBytes {
							if err != nil {
								t.Fatalf("%s of a %s of %d bytes: %v", op.Op, doc, size, err)
							}
							return
						}
						if err == nil || !strings.Contains(err.Error(), what) || !strings.Contains(err.Error(), "8 MiB limit") {
							t.Fatalf("%s of a %s of %d bytes: %v, want an error naming %s and the 8 MiB limit", op.Op, doc, size, err, what)
						}
						t.Logf("%s: %v", op.Op, err)
						logHostile(t, doc+"-over-limit/"+strings.Split(src, ":")[0]+"/"+op.Op, failedClearly, 0)
					})
				}
			}
		}
	}
	t.Run("manifest-64MiB/verify", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "oci")
		img := hWriteImage(t, dir, []hLayer{layer}, func(m *ocispec.Manifest) { hPadManifest(t, m, 64<<20) })
		r := runChild(t, childOp{Op: "verify", Src: img.ref()})
		t.Logf("verify: %s", r)
		if !strings.Contains(r.Err, img.desc.Digest.String()) || !strings.Contains(r.Err, "limit") {
			t.Errorf("verify of a 64 MiB manifest: %s, want it refused naming %s", r, img.desc.Digest)
		}
		if r.HWM >= limits.MemoryBound {
			t.Errorf("verify of a 64 MiB manifest: %s, want a peak under %s", r, limits.Bytes(limits.MemoryBound))
		}
		logHostile(t, "manifest-64MiB/verify", failedClearly, 0, fmt.Sprintf("peak_rss_mib=%d", r.HWM>>20))
	})
}

// hStreamPast answers a GET of a blob with no Content-Length: a tar stream
// of one file, models/evil.bin, of up to cap bytes of zeros, written until
// the client goes away. A client that trusts the server reads (and a pull
// writes) all of it.
func hStreamPast(cap int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Docker-Content-Digest", strings.TrimPrefix(r.URL.Path[strings.LastIndex(r.URL.Path, "/"):], "/"))
		w.WriteHeader(http.StatusOK)
		tw := tar.NewWriter(w)
		if tw.WriteHeader(&tar.Header{Name: "models/evil.bin", Mode: 0o644, Size: cap, Typeflag: tar.TypeReg}) != nil {
			return
		}
		buf := make([]byte, 256<<10)
		for n := int64(0); n < cap; n += int64(len(buf)) {
			if _, err := tw.Write(buf[:min(int64(len(buf)), cap-n)]); err != nil {
				return
			}
			http.NewResponseController(w).Flush()
		}
	}
}

// TestHostileBlobSize: what a descriptor says of a blob's size is what is
// read, on every path.
//   - A registry that streams a layer with no Content-Length, past its
//     size: pull and mirror (into a layout) read 256 MiB of it (pull wrote
//     it to disk) before failing; now at most size+1 bytes are read.
//   - A manifest whose layer descriptor gives a wrong size (one less, one
//     more, zero, negative) for the right content: inspect, pull and mirror
//     took it; now all of pull, inspect, mirror and verify refuse it,
//     naming the layer, from a layout and an archive.
func TestHostileBlobSize(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: a real registry behind a lying proxy")
	}
	layers := []hLayer{
		hTarLayer(t, map[string]string{"config.json": `{"architectures":["LlamaForCausalLM"]}`}),
		hTarLayer(t, map[string]string{"model.safetensors": strings.Repeat("w", 1<<20)}),
	}
	t.Run("stream-past-size", func(t *testing.T) {
		img := hWriteImage(t, filepath.Join(t.TempDir(), "oci"), layers, nil)
		reg, dst := testenv.StartRegistry(t), testenv.StartRegistry(t)
		copyT(t, img.ref(), reg.Ref("hostile/past")+":v1")
		const streamCap = 256 << 20
		big := img.layers[1]
		for name, op := range map[string]childOp{
			"pull":            {Op: "pull", Dst: filepath.Join(t.TempDir(), "pulled")},
			"mirror-layout":   {Op: "mirror", Dst: "oci:" + filepath.Join(t.TempDir(), "mirror") + ":v1"},
			"mirror-registry": {Op: "mirror", Dst: dst.Ref("hostile/past") + ":v1"},
			"verify":          {Op: "verify"},
		} {
			t.Run(name, func(t *testing.T) {
				proxy := testenv.StartProxy(t, reg.Addr)
				proxy.Inject(testenv.Fault{Method: http.MethodGet, PathContains: "/blobs/" + big.Digest.String(), Times: 100, Respond: hStreamPast(streamCap)})
				op.Src = proxy.Ref("hostile/past") + ":v1"
				err := hRun(t, op)
				var sent int64
				for _, r := range proxy.Requests() {
					if r.Fault != "" {
						sent += r.BytesOut
					}
				}
				t.Logf("%s: the proxy sent %s of the layer (its size: %d bytes): %v", op.Op, limits.Bytes(sent), big.Size, err)
				if err == nil || !strings.Contains(err.Error(), big.Digest.String()) {
					t.Errorf("%s: %v, want an error naming %s", op.Op, err, big.Digest)
				}
				// Sockets buffer a few MiB beyond what the client read.
				if sent > big.Size+32<<20 {
					t.Errorf("%s read %d bytes of a %d-byte layer", op.Op, sent, big.Size)
				}
				var lost int64
				if name == "mirror-registry" && tagExists(t, dst, nil, "hostile/past:v1") {
					lost = big.Size
				}
				logHostile(t, "stream-past-size/"+name, failedClearly, lost, fmt.Sprintf("bytes_served=%d", sent))
			})
		}
	})
	for _, lie := range []struct {
		name string
		size func(real int64) int64
	}{
		{"one-less", func(n int64) int64 { return n - 1 }},
		{"one-more", func(n int64) int64 { return n + 1 }},
		{"zero", func(int64) int64 { return 0 }},
		{"negative", func(int64) int64 { return -1 }},
	} {
		dir := filepath.Join(t.TempDir(), "oci")
		img := hWriteImage(t, dir, layers, func(m *ocispec.Manifest) { m.Layers[1].Size = lie.size(m.Layers[1].Size) })
		layer := img.layers[1].Digest.String()
		for _, src := range []string{img.ref(), hArchive(t, dir)} {
			for _, op := range hOps(t, src) {
				t.Run("size-"+lie.name+"/"+strings.Split(src, ":")[0]+"/"+op.Op, func(t *testing.T) {
					err := hRun(t, op)
					t.Logf("%s: %v", op.Op, err)
					if err == nil || !strings.Contains(err.Error(), layer) {
						t.Fatalf("%s of a layer whose descriptor says %d bytes: %v, want an error naming %s", op.Op, img.layers[1].Size, err, layer)
					}
					var lost int64
					if op.Op == "mirror" {
						lost = hTaggedButMissing(t, strings.TrimSuffix(strings.TrimPrefix(op.Dst, "oci:"), ":v1"))
					}
					logHostile(t, "size-"+lie.name+"/"+strings.Split(src, ":")[0]+"/"+op.Op, failedClearly, lost)
				})
			}
		}
	}
}

// hTaggedButMissing returns the bytes the images tagged in the layout dir
// refer to that are not in it (0 when dir is no layout): content a tag
// claims but the layout does not hold.
func hTaggedButMissing(t *testing.T, dir string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return 0
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatalf("%s: index.json: %v", dir, err)
	}
	var lost int64
	var walk func(d ocispec.Descriptor)
	walk = func(d ocispec.Descriptor) {
		b, err := os.ReadFile(hLayoutBlob(dir, d.Digest))
		if err != nil {
			lost += max(d.Size, 1)
			return
		}
		var doc struct {
			Manifests []ocispec.Descriptor `json:"manifests"`
			Config    *ocispec.Descriptor  `json:"config"`
			Layers    []ocispec.Descriptor `json:"layers"`
		}
		if json.Unmarshal(b, &doc) != nil {
			return // a blob
		}
		for _, c := range doc.Manifests {
			walk(c)
		}
		for _, c := range append(doc.Layers, ptrOr(doc.Config)...) {
			if st, err := os.Stat(hLayoutBlob(dir, c.Digest)); err != nil || st.Size() != c.Size {
				lost += max(c.Size, 1)
			}
		}
	}
	for _, d := range idx.Manifests {
		if d.Annotations[ocilayout.AnnotationRefName] != "" {
			walk(d)
		}
	}
	return lost
}

func ptrOr(d *ocispec.Descriptor) []ocispec.Descriptor {
	if d == nil {
		return nil
	}
	return []ocispec.Descriptor{*d}
}

// hIndexOf stores an image index listing desc in the layout at dir and
// makes index.json list that index (honestly) tagged v1.
func hIndexOf(t testing.TB, dir string, desc ocispec.Descriptor) ocispec.Descriptor {
	t.Helper()
	desc.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
	b, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{desc}})
	if err != nil {
		t.Fatal(err)
	}
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(b), Size: int64(len(b))}
	if err := os.WriteFile(hLayoutBlob(dir, d.Digest), b, 0o644); err != nil {
		t.Fatal(err)
	}
	hTagAs(t, dir, d)
	return d
}

// TestHostileMediaType: a manifest whose descriptor's media type is
// missing, unknown or has parameters, in index.json or in an image index,
// or which a registry serves as application/octet-stream, was taken for a
// blob with no children: verify passed a corrupt layer, and mirror tagged a
// manifest whose config and layers it never copied. Manifests are now
// identified by their content: those four are read as what they hold
// (mirrored whole, verified to the last layer), and a descriptor naming
// another kind of manifest than the content (an index for a manifest) is
// refused by every reader.
func TestHostileMediaType(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: a real registry behind a lying proxy")
	}
	layers := []hLayer{
		hTarLayer(t, map[string]string{"config.json": `{"architectures":["LlamaForCausalLM"]}`}),
		hTarLayer(t, map[string]string{"model.safetensors": strings.Repeat("w", 64<<10)}),
	}
	// check judges the four readers of an image, intact and with its
	// second layer corrupt (corrupt flips a byte of it).
	layer := layers[1].diffID.String() // an uncompressed layer's digest
	check := func(t *testing.T, name, src string, refused bool, corrupt func()) {
		for _, op := range hOps(t, src) {
			err := hRun(t, op)
			var lost int64
			if op.Op == "mirror" {
				lost = hTaggedButMissing(t, strings.TrimSuffix(strings.TrimPrefix(op.Dst, "oci:"), ":v1"))
			}
			switch {
			case refused && (err == nil || !strings.Contains(err.Error(), "content")):
				t.Errorf("%s %s: %v, want it refused for what the descriptor and the content say", name, op.Op, err)
			case !refused && err != nil:
				t.Errorf("%s %s: %v", name, op.Op, err)
			case refused:
				t.Logf("%s %s: %v", name, op.Op, err)
			}
			o := survived
			if err != nil {
				o = failedClearly
			}
			logHostile(t, "media-type-"+name+"/"+op.Op, o, lost)
		}
		corrupt()
		err := hRun(t, childOp{Op: "verify", Src: src})
		if err == nil || (!refused && !strings.Contains(err.Error(), "blob "+layer)) {
			t.Errorf("%s verify of a corrupt layer: %v, want it to fail naming blob %s", name, err, layer)
		}
		t.Logf("%s verify of a corrupt layer: %v", name, err)
		logHostile(t, "media-type-"+name+"/verify-corrupt", failedClearly, 0)
	}
	for _, lie := range []struct {
		name, mediaType string
		refused         bool
	}{
		{"missing", "", false},
		{"unknown", "application/vnd.example.unknown", false},
		{"parameters", ocispec.MediaTypeImageManifest + "; charset=utf-8", false},
		{"octet-stream", "application/octet-stream", false},
		{"other-kind", ocispec.MediaTypeImageIndex, true},
	} {
		for _, where := range []string{"index.json", "image-index"} {
			t.Run(lie.name+"/"+where, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "oci")
				img := hWriteImage(t, dir, layers, nil)
				d := img.desc
				d.MediaType = lie.mediaType
				if where == "index.json" {
					hTagAs(t, dir, d)
				} else {
					hIndexOf(t, dir, d)
				}
				check(t, lie.name+"/"+where, img.ref(), lie.refused, func() { flipByte(t, hLayoutBlob(dir, img.layers[1].Digest), 100) })
			})
		}
	}
	t.Run("registry-octet-stream", func(t *testing.T) {
		img := hWriteImage(t, filepath.Join(t.TempDir(), "oci"), layers, nil)
		reg := testenv.StartRegistry(t)
		copyT(t, img.ref(), reg.Ref("hostile/mt")+":v1")
		proxy := testenv.StartProxy(t, reg.Addr)
		proxy.Inject(testenv.Fault{PathContains: "/manifests/", Times: 1 << 20,
			Header: http.Header{"Content-Type": {"application/octet-stream"}}})
		check(t, "registry-octet-stream", proxy.Ref("hostile/mt")+":v1", false,
			func() { flipByte(t, blobData(reg, img.layers[1].Digest.Encoded()), 100) })
	})
}

// TestHostileLayoutFiles: a layout's index.json or oci-layout that is a
// symlink to /dev/zero, a 1 GiB file or a named pipe, and an archive that
// is a named pipe. pull, inspect, verify and mirror read such files
// without bound (oci-layout was never read: a 1 GiB one passed) or hung
// forever on the pipe; each now fails within seconds, in bounded memory,
// naming the file.
func TestHostileLayoutFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 28 operations in child processes")
	}
	layers := []hLayer{hTarLayer(t, map[string]string{"config.json": "{}"})}
	kinds := map[string]func(t *testing.T, path string){
		"dev-zero": func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		},
		"1GiB": func(t *testing.T, path string) {
			f, err := os.Create(path)
			if err == nil {
				err = f.Truncate(1 << 30) // sparse: no disk
				f.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
		},
		"fifo": func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		},
	}
	run := func(t *testing.T, name, src, file string) {
		for _, op := range hOps(t, src) {
			op.Timeout, op.MaxRSS = 15*time.Second, limits.MemoryBound
			r := runChild(t, op)
			t.Logf("%s %s: %s", name, op.Op, r)
			switch {
			case r.Stopped != "":
				t.Errorf("%s %s: %s", name, op.Op, r)
			case r.Err == "" || !strings.Contains(r.Err, file):
				t.Errorf("%s %s: %q, want an error naming %s", name, op.Op, r.Err, file)
			}
			logHostile(t, name+"/"+op.Op, failedClearly, 0, fmt.Sprintf("peak_rss_mib=%d", r.HWM>>20))
		}
	}
	for _, file := range []string{"index.json", "oci-layout"} {
		for kind, make := range kinds {
			t.Run(file+"/"+kind, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "oci")
				img := hWriteImage(t, dir, layers, nil)
				path := filepath.Join(dir, file)
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				make(t, path)
				run(t, "layout-"+file+"-"+kind, img.ref(), file)
			})
		}
	}
	t.Run("archive/fifo", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "m.tar")
		kinds["fifo"](t, file)
		run(t, "archive-fifo", "oci-archive:"+file+":v1", file)
	})
}

// TestHostileIndexDepth: image indexes nested in image indexes are read
// limits.MaxIndexDepth deep by pull, inspect, mirror and verify alike, and
// refused one deeper, naming the index.
func TestHostileIndexDepth(t *testing.T) {
	layers := []hLayer{hTarLayer(t, map[string]string{"config.json": "{}"})}
	for _, levels := range []int{limits.MaxIndexDepth, limits.MaxIndexDepth + 1} {
		dir := filepath.Join(t.TempDir(), "oci")
		img := hWriteImage(t, dir, layers, nil)
		top := img.desc
		for range levels {
			top = hIndexOf(t, dir, top)
		}
		for _, op := range hOps(t, img.ref()) {
			t.Run(fmt.Sprintf("%d-levels/%s", levels, op.Op), func(t *testing.T) {
				err := hRun(t, op)
				if levels <= limits.MaxIndexDepth {
					if err != nil {
						t.Fatalf("%s of %d nested indexes: %v", op.Op, levels, err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), "nested more than") {
					t.Fatalf("%s of %d nested indexes: %v, want them refused", op.Op, levels, err)
				}
				t.Logf("%s: %v", op.Op, err)
				logHostile(t, "index-depth/"+op.Op, failedClearly, 0)
			})
		}
	}
}
