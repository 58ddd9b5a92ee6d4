package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/pack"
)

// lyingLayout writes an OCI layout and returns it as oci:DIR:v1; its layers' title
// annotations say other than what the layers hold: a plain tar layer that
// claims config.json and holds a script and a file outside /models, a
// gzip layer holding a file named a,b.json (its title escaped, as pack
// writes it), and a zstd layer holding tokenizer.json that claims
// a,b.json with an older pack's unescaped title.
func lyingLayout(t *testing.T) string {
	t.Helper()
	tarOf := func(names ...string) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: "models/", Typeflag: tar.TypeDir, Mode: 0o755})
		for _, n := range names {
			tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: 2})
			tw.Write([]byte("{}"))
		}
		tw.Close()
		return buf.Bytes()
	}
	opener := func(b []byte) tarball.Opener {
		return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	plain := static.NewLayer(tarOf("models/evil.sh", "etc/cron.d/x"), types.OCIUncompressedLayer)
	gz, err := tarball.LayerFromOpener(opener(tarOf("models/a,b.json")), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	zs, err := tarball.LayerFromOpener(opener(tarOf("models/tokenizer.json")), tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	title := func(s string) map[string]string { return map[string]string{pack.AnnotationTitle: s} }
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: plain, Annotations: title("config.json")},
		mutate.Addendum{Layer: gz, Annotations: title(pack.Title([]string{"a,b.json"}))},
		mutate.Addendum{Layer: zs, Annotations: title("a,b.json")})
	if err != nil {
		t.Fatal(err)
	}
	return testenv.WriteLayout(t, img, "lying", "v1")
}

type inspectedLayers struct {
	Layers []struct {
		Files        []string
		FilesClaimed bool
		ClaimedFiles []string
	}
}

// TestInspectListsWhatLayersHold: the FILES of a local image (layout or
// archive) are what its layers hold, read from their tar headers whatever
// the compression, with a warning where the title annotation claims other
// files; those of a registry image are the claims, marked as such, unless
// --read-layers. A name with a comma is one file.
func TestInspectListsWhatLayersHold(t *testing.T) {
	src := lyingLayout(t)
	held := [][]string{{"evil.sh", "/etc/cron.d/x"}, {"a,b.json"}, {"tokenizer.json"}}
	claimed := [][]string{{"config.json"}, {"a,b.json"}, {"a", "b.json"}}
	check := func(what string, args []string, want [][]string, readFromLayers bool) {
		t.Helper()
		r := run(t, nil, append([]string{"inspect"}, args...)...)
		if r.code != 0 {
			t.Fatalf("%s: %+v", what, r)
		}
		rows := strings.Split(r.stdout[strings.Index(r.stdout, "FILES\n")+len("FILES\n"):], "\n")
		for i, files := range want {
			cell := strings.Join(files, ", ")
			if cell == "a,b.json" { // quoted in text: one name with a comma
				cell = `"a,b.json"`
			}
			if !readFromLayers {
				cell += " (claimed)"
			}
			if !strings.HasSuffix(strings.TrimRight(rows[i], " "), "  "+cell) {
				t.Errorf("%s: layer %d row %q, want FILES %q", what, i, rows[i], cell)
			}
		}
		if readFromLayers != strings.Contains(r.stderr, "claims config.json") || (readFromLayers && !strings.Contains(r.stderr, "holds evil.sh, /etc/cron.d/x")) {
			t.Errorf("%s: stderr %q (a warning about the lying title only when the layers were read)", what, r.stderr)
		}
		r = run(t, nil, append([]string{"inspect", "--json"}, args...)...)
		var info inspectedLayers
		if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || len(info.Layers) != len(want) {
			t.Fatalf("%s --json: %v\n%s", what, err, r.stdout)
		}
		for i, l := range info.Layers {
			if !slices.Equal(l.Files, want[i]) || l.FilesClaimed == readFromLayers {
				t.Errorf("%s --json: layer %d files %q claimed %v, want %q claimed %v", what, i, l.Files, l.FilesClaimed, want[i], !readFromLayers)
			}
			if lies := readFromLayers && i != 1; lies != (l.ClaimedFiles != nil) || (lies && !slices.Equal(l.ClaimedFiles, claimed[i])) {
				t.Errorf("%s --json: layer %d claimedFiles %q", what, i, l.ClaimedFiles)
			}
		}
	}
	check("layout", []string{src}, held, true)
	check("layout, claims", []string{src, "--read-layers=false"}, claimed, false)
	archive := "oci-archive:" + filepath.Join(t.TempDir(), "lying.tar") + ":v1"
	if r := run(t, nil, "mirror", src, archive); r.code != 0 {
		t.Fatalf("mirror to an archive: %+v", r)
	}
	check("archive", []string{archive}, held, true)
	if testing.Short() {
		return
	}
	reg := testenv.StartRegistry(t)
	remote := reg.Ref("lying/m") + ":v1"
	if r := run(t, nil, "push", "--plain-http", src, remote); r.code != 0 {
		t.Fatalf("push: %+v", r)
	}
	check("registry", []string{remote, "--plain-http"}, claimed, false)
	check("registry, read", []string{remote, "--plain-http", "--read-layers"}, held, true)
}

// TestInspectReadsPackedFormats: what inspect reads from the layers of
// every format pack writes is what their titles claim (eStargz's and
// zstd:chunked's metadata entries are not model files): no warning, and
// the same files as pack reported.
func TestInspectReadsPackedFormats(t *testing.T) {
	m := genModel(t)
	for _, f := range pack.Formats {
		out := "oci:" + filepath.Join(t.TempDir(), string(f)) + ":v1"
		r := run(t, nil, "pack", m.Dir, "--format", string(f), "--output", out, "--json")
		var res struct{ Layers []struct{ Files []string } }
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("pack --format %s: %v %+v", f, err, r)
		}
		r = run(t, nil, "inspect", out, "--json")
		var info inspectedLayers
		if err := json.Unmarshal([]byte(r.stdout), &info); err != nil || r.stderr != "" || len(info.Layers) != len(res.Layers) {
			t.Fatalf("inspect of --format %s: %v %+v", f, err, r)
		}
		for i, l := range info.Layers {
			if l.FilesClaimed || l.ClaimedFiles != nil || !slices.Equal(slices.Sorted(slices.Values(l.Files)), slices.Sorted(slices.Values(res.Layers[i].Files))) {
				t.Errorf("--format %s layer %d: inspect read %+v, pack wrote %q", f, i, l, res.Layers[i].Files)
			}
		}
	}
}
