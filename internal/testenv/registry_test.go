package testenv

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// randomOCIImage is a small image with OCI media types (manifest, config
// and layers) and random layer content.
func randomOCIImage(t *testing.T) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for i := 0; i < 2; i++ {
		l, err := random.Layer(1024, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func pushImage(t *testing.T, ref name.Reference, img v1.Image, opts ...remote.Option) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return remote.Write(ref, img, append([]remote.Option{remote.WithContext(ctx)}, opts...)...)
}

func pulledDigest(t *testing.T, ref name.Reference, opts ...remote.Option) v1.Hash {
	t.Helper()
	img, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatalf("remote.Image(%s): %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	// Reading the layers checks that the blobs are there too.
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("layer of %s: %v", ref, err)
		}
		rc.Close()
	}
	return d
}

func TestRegistryPushPull(t *testing.T) {
	r := StartRegistry(t)
	if !strings.HasPrefix(r.Addr, "127.0.0.1:") {
		t.Errorf("Addr = %q, want 127.0.0.1:PORT", r.Addr)
	}
	if got, want := r.Ref("models/tiny:v1"), r.Addr+"/models/tiny:v1"; got != want {
		t.Errorf("Ref = %q, want %q", got, want)
	}
	img := randomOCIImage(t)
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, r.Ref("models/tiny:v1"))
	if err := pushImage(t, ref, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	if got := pulledDigest(t, ref); got != want {
		t.Errorf("pulled digest %s, want %s", got, want)
	}
	desc, err := remote.Get(ref)
	if err != nil {
		t.Fatal(err)
	}
	if desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("media type %s, want %s", desc.MediaType, types.OCIManifestSchema1)
	}
	// Deletes are enabled.
	if err := remote.Delete(mustRef(t, r.Ref("models/tiny@"+want.String()))); err != nil {
		t.Errorf("delete: %v", err)
	}
	if _, err := os.Stat(r.Root); err != nil {
		t.Errorf("storage root: %v", err)
	}
	if data, err := os.ReadFile(r.LogFile); err != nil || len(data) == 0 {
		t.Errorf("log file %s empty or unreadable: %v", r.LogFile, err)
	}
}

func TestRegistryHtpasswd(t *testing.T) {
	pw, wrong := NewSecret(t, "modelcar"), NewSecret(t, "modelcar")
	r := StartRegistry(t, WithHtpasswd("modelcar", pw))
	if r.User != "modelcar" || r.Password != pw {
		t.Errorf("User, Password = %q, %q", r.User, Mask(r.Password))
	}
	img := randomOCIImage(t)
	ref := mustRef(t, r.Ref("private/tiny:v1"))

	err := pushImage(t, ref, img)
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous push: got %v, want a 401 transport error", err)
	}
	err = pushImage(t, ref, img, remote.WithAuth(&authn.Basic{Username: "modelcar", Password: wrong}))
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("push with a wrong password: got %v, want a 401 transport error", err)
	}

	auth := remote.WithAuth(&authn.Basic{Username: r.User, Password: r.Password})
	if err := pushImage(t, ref, img, auth); err != nil {
		t.Fatalf("authenticated push: %v", err)
	}
	want, _ := img.Digest()
	if got := pulledDigest(t, ref, auth); got != want {
		t.Errorf("pulled digest %s, want %s", got, want)
	}
}

func TestRegistryRestartKeepsImages(t *testing.T) {
	r := StartRegistry(t)
	img := randomOCIImage(t)
	want, _ := img.Digest()
	ref := mustRef(t, r.Ref("keep/tiny:v1"))
	if err := pushImage(t, ref, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	addr := r.Addr
	r.Restart(t)
	if r.Addr != addr {
		t.Errorf("Restart moved the registry from %s to %s", addr, r.Addr)
	}
	if got := pulledDigest(t, ref); got != want {
		t.Errorf("pulled digest after restart %s, want %s", got, want)
	}
}

func TestRegistryStoppedInCleanup(t *testing.T) {
	var addr string
	t.Run("inner", func(t *testing.T) {
		addr = StartRegistry(t).Addr
	})
	if addr == "" {
		t.Skip("inner test did not start a registry")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if registryAnswers(ctx, addr) {
		t.Errorf("registry on %s still answers after its test's cleanup", addr)
	}
}

func TestRegistryConfig(t *testing.T) {
	cfg := RegistryConfig("/tmp/x y/storage", "127.0.0.1:5555", "")
	for _, want := range []string{
		"version: 0.1\n",
		`rootdirectory: "/tmp/x y/storage"`,
		"  delete:\n    enabled: true\n",
		"    uploadpurging:\n      enabled: false\n",
		`addr: "127.0.0.1:5555"`,
		"level: info",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if strings.Contains(cfg, "auth:") {
		t.Errorf("config without htpasswd has an auth section:\n%s", cfg)
	}
	if cfg := RegistryConfig("/r", "127.0.0.1:1", "/h/htpasswd"); !strings.Contains(cfg, "auth:\n  htpasswd:\n") || !strings.Contains(cfg, `path: "/h/htpasswd"`) {
		t.Errorf("config with htpasswd:\n%s", cfg)
	}
}
