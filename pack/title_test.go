package pack_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// TestTitleRoundTrip: names with commas and percent signs read back as
// written, and titles written before the escaping read as they always did.
func TestTitleRoundTrip(t *testing.T) {
	for _, files := range [][]string{
		{"config.json", "tokenizer.json"},
		{"a,b.json"},
		{"a,b.json", "c.json", ",", "x,,y,"},
		{"100%.txt", "%2C.txt", "%252C", "%"},
		{"sub dir/model-00001-of-00002.safetensors"},
	} {
		title := pack.Title(files)
		if got := pack.TitleFiles(title); !slices.Equal(got, files) {
			t.Errorf("Title(%q) = %q reads back as %q", files, title, got)
		}
	}
	if got := pack.TitleFiles("config.json,generation_config.json,tokenizer.json"); !slices.Equal(got, []string{"config.json", "generation_config.json", "tokenizer.json"}) {
		t.Errorf("an old title reads as %q", got)
	}
	if got := pack.TitleFiles("50%off.txt,%zz"); !slices.Equal(got, []string{"50%off.txt", "%zz"}) {
		t.Errorf("a %% that escapes nothing: %q", got)
	}
	if got := pack.TitleFiles(""); got != nil {
		t.Errorf("empty title: %q", got)
	}
}

// TestPackTitleKeepsCommaNames: a file whose name holds a comma is one
// file in the layer's title, as inspect reads it.
func TestPackTitleKeepsCommaNames(t *testing.T) {
	m := genModel(t, 7, 1<<20, 2)
	if err := os.WriteFile(filepath.Join(m.Dir, "a,b.json"), []byte(`{"x": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "oci")
	packT(t, m.Dir, "oci:"+out+":v1")
	info, err := push.Inspect(context.Background(), "oci:"+out+":v1", v1.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	files := info.Layers[0].Files
	if !slices.Contains(files, "a,b.json") || slices.Contains(files, "a") || slices.Contains(files, "b.json") {
		t.Errorf("the small files' layer lists %q, want a,b.json as one name", files)
	}
}
