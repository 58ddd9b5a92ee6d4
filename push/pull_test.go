package push_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

func treeSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		s := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = hex.EncodeToString(s[:])
		return nil
	})
	return out
}

func sameTree(t *testing.T, want, got string) {
	t.Helper()
	w, g := treeSums(t, want), treeSums(t, got)
	if len(w) != len(g) {
		t.Errorf("%s has %d files, want %d", got, len(g), len(w))
	}
	for k, v := range w {
		if g[k] != v {
			t.Errorf("%s differs or is missing in %s", k, got)
		}
	}
}

// TestPullWhatPeersPushed: skopeo and crane push the packed layout to a
// real registry; modelcar pulls and verifies each, byte-identical to the
// model directory.
func TestPullWhatPeersPushed(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry, skopeo, crane")
	}
	reg := testenv.StartRegistry(t)
	for _, f := range []pack.Format{pack.FormatTar, pack.FormatZstd, pack.FormatEstargz} {
		t.Run(string(f), func(t *testing.T) {
			m, p := packed(t, 3, 3<<20, f)
			layoutDir := strings.TrimSuffix(strings.TrimPrefix(p.Tagged, "oci:"), ":v1")
			bySkopeo := reg.Ref("skopeo/"+string(f)) + ":v1"
			testenv.Skopeo(t, "copy", "--dest-tls-verify=false", "--preserve-digests", "oci:"+layoutDir+":v1", "docker://"+bySkopeo)
			byCrane := reg.Ref("crane/"+string(f)) + ":v1"
			testenv.Crane(t, "push", "--insecure", layoutDir, byCrane)
			for _, src := range []string{bySkopeo, byCrane} {
				vr, err := push.Verify(context.Background(), src, m.Dir, "", push.WithPlainHTTP(true))
				if err != nil {
					t.Fatalf("verify %s: %v", src, err)
				}
				if vr.Digest != p.Digest.String() || vr.Files != len(m.Files) {
					t.Errorf("verify %s: %+v, packed %s with %d files", src, vr, p.Digest, len(m.Files))
				}
				dir := filepath.Join(t.TempDir(), "pulled")
				dg, err := push.Pull(context.Background(), src, dir, push.PullOptions{}, push.WithPlainHTTP(true))
				if err != nil {
					t.Fatalf("pull %s: %v", src, err)
				}
				if dg.Digest != p.Digest.String() || dg.Manifest != dg.Digest || !strings.HasSuffix(dg.Reference, "@"+dg.Digest) {
					t.Errorf("pulled %+v, pushed %s", dg, p.Digest)
				}
				sameTree(t, m.Dir, dir)
			}
		})
	}
}

func TestPullFromArchiveAndLayout(t *testing.T) {
	m, p := packed(t, 4, 2<<20, pack.FormatTar)
	archive := filepath.Join(t.TempDir(), "m.tar")
	copyT(t, p.Tagged, "oci-archive:"+archive)
	for _, src := range []string{p.Tagged, "oci-archive:" + archive + ":v1"} {
		dir := filepath.Join(t.TempDir(), "out")
		if _, err := push.Pull(context.Background(), src, dir, push.PullOptions{}); err != nil {
			t.Fatalf("pull %s: %v", src, err)
		}
		sameTree(t, m.Dir, dir)
	}
}

func TestVerifyFindsCorruptBlob(t *testing.T) {
	_, p := packed(t, 5, 2<<20, pack.FormatTar)
	layoutDir := strings.TrimSuffix(strings.TrimPrefix(p.Tagged, "oci:"), ":v1")
	if _, err := push.Verify(context.Background(), p.Tagged, "", ""); err != nil {
		t.Fatalf("verify of a good layout: %v", err)
	}
	blob := filepath.Join(layoutDir, "blobs", "sha256", p.Layers[1].Digest.Hex)
	fh, err := os.OpenFile(blob, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteAt([]byte("X"), 4096)
	fh.Close()
	_, err = push.Verify(context.Background(), p.Tagged, "", "")
	if err == nil || !strings.Contains(err.Error(), p.Layers[1].Digest.String()) {
		t.Errorf("verify of a corrupt blob: %v", err)
	}
	// Copying the corrupt layout to a registry must fail, not tag it.
	if !testing.Short() {
		reg := testenv.StartRegistry(t)
		_, err := push.Copy(context.Background(), p.Tagged, reg.Ref("bad/m")+":v1", push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithRetries(1))
		if err == nil {
			t.Fatal("pushing a corrupt blob succeeded")
		}
		if _, err := push.Verify(context.Background(), reg.Ref("bad/m")+":v1", "", "", push.WithPlainHTTP(true)); err == nil {
			t.Errorf("the registry has a tag for the corrupt image")
		}
	}
}
