package push_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/modelcar/modelcar/internal/ocilayout"
	"github.com/modelcar/modelcar/internal/ref"
	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/pack"
)

// namesAt lists the names an image has at dst (registry, oci: or
// oci-archive:, named without tag): its tags, and "@DIGEST" for an
// untagged index.json entry or a registry manifest that only its digest
// names.
func namesAt(t *testing.T, dst, dg string) []string {
	t.Helper()
	r, err := ref.Parse(dst)
	if err != nil {
		t.Fatal(err)
	}
	var idx *v1.IndexManifest
	switch r.Kind {
	case ref.Registry:
		repo := r.Name.Context()
		base := "http://" + repo.RegistryStr() + "/v2/" + repo.RepositoryStr()
		var tags struct{ Tags []string }
		resp, err := http.Get(base + "/tags/list")
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&tags)
		resp.Body.Close()
		if len(tags.Tags) > 0 {
			return tags.Tags
		}
		req, _ := http.NewRequest(http.MethodHead, base+"/manifests/"+dg, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil
		}
		return []string{"@" + dg}
	case ref.Layout:
		l, err := ocilayout.Open(r.Path)
		if err != nil {
			t.Fatal(err)
		}
		if idx, err = l.Index(); err != nil {
			t.Fatal(err)
		}
	case ref.Archive:
		a, err := ocilayout.OpenArchive(r.Path)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if idx, err = a.Index(); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, d := range idx.Manifests {
		if n, ok := d.Annotations[ocilayout.AnnotationRefName]; ok {
			names = append(names, n)
		} else {
			names = append(names, "@"+d.Digest.String())
		}
	}
	slices.Sort(names)
	return names
}

// TestMirrorTagRuleEveryKind: one rule names the destination whatever the
// kinds on either side. A destination that names no tag keeps the source's
// tag, whether the source reference carried it or the source is a layout
// or archive named by path that holds one tagged image; a destination tag
// wins; an image named only by digest arrives untagged.
func TestMirrorTagRuleEveryKind(t *testing.T) {
	reg := testenv.StartRegistry(t)
	_, p := packed(t, 11, 1<<20, pack.FormatTar)
	dg := p.Digest.String()
	layout := strings.TrimSuffix(p.Tagged, ":v1") // oci:PATH holding only v1
	archive := "oci-archive:" + filepath.Join(t.TempDir(), "a.tar")
	copyT(t, p.Tagged, archive+":v1")
	copyT(t, p.Tagged, reg.Ref("src/m")+":v1")
	sources := map[string]string{
		"registry": reg.Ref("src/m") + ":v1",
		"layout":   layout,
		"archive":  archive, // holds v1, named by path alone
	}
	n := 0
	dest := func(kind string) string {
		n++
		switch kind {
		case "registry":
			return reg.Ref("dst/m" + strings.Repeat("x", n))
		case "layout":
			return "oci:" + filepath.Join(t.TempDir(), "m")
		}
		return "oci-archive:" + filepath.Join(t.TempDir(), "m.tar")
	}
	kinds := []string{"registry", "layout", "archive"}
	for _, sk := range kinds {
		for _, dk := range kinds {
			t.Run(sk+"-to-"+dk, func(t *testing.T) {
				dst := dest(dk)
				res := copyT(t, sources[sk], dst)
				if got := namesAt(t, dst, dg); !slices.Equal(got, []string{"v1"}) {
					t.Errorf("mirror %s %s: the destination has %v, want the source's tag [v1]", sources[sk], dst, got)
				}
				if !strings.HasSuffix(res.Tagged, ":v1") || !strings.HasSuffix(res.Reference, "@"+dg) {
					t.Errorf("result reference %q, tagged %q", res.Reference, res.Tagged)
				}
			})
		}
	}
	for _, dk := range kinds {
		t.Run("named-tag-to-"+dk, func(t *testing.T) {
			dst := dest(dk)
			copyT(t, archive, dst+":v2")
			if got := namesAt(t, dst, dg); !slices.Equal(got, []string{"v2"}) {
				t.Errorf("mirror %s %s:v2: the destination has %v, want [v2]", archive, dst, got)
			}
		})
		t.Run("digest-to-"+dk, func(t *testing.T) {
			dst := dest(dk)
			res := copyT(t, layout+"@"+dg, dst)
			if got := namesAt(t, dst, dg); !slices.Equal(got, []string{"@" + dg}) {
				t.Errorf("mirror %s@%s %s: the destination has %v, want the image untagged", layout, dg, dst, got)
			}
			if res.Tagged != "" || !strings.HasSuffix(res.Reference, "@"+dg) {
				t.Errorf("result reference %q, tagged %q", res.Reference, res.Tagged)
			}
		})
	}
}
