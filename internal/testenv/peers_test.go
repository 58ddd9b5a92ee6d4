package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/modelcar/modelcar/internal/toolcache"
)

// TestPeerVersionsPinned checks that the fallback versions in peerTools agree
// with tools/go.mod, which is what PeerBinary really uses.
func TestPeerVersionsPinned(t *testing.T) {
	dir, err := findToolsModule()
	if err != nil {
		t.Fatal(err)
	}
	for name, tool := range peerTools {
		got, err := toolcache.RequiredVersion(filepath.Join(dir, "go.mod"), tool.module)
		if err != nil {
			t.Fatal(err)
		}
		if got != tool.version {
			t.Errorf("%s: tools/go.mod pins %s %s, peers.go says %s", name, tool.module, got, tool.version)
		}
	}
}

func TestPeerBinaryCached(t *testing.T) {
	for _, name := range []string{"crane", "oras"} {
		p := PeerBinary(t, name)
		if !filepath.IsAbs(p) || !toolcache.IsExecutable(p) {
			t.Errorf("PeerBinary(%s) = %q, not an absolute executable", name, p)
		}
		if want := name + "-" + peerTools[name].version; filepath.Base(p) != want {
			t.Errorf("PeerBinary(%s) = %q, want a file named %s", name, p, want)
		}
		if again := PeerBinary(t, name); again != p {
			t.Errorf("PeerBinary(%s) changed from %s to %s", name, p, again)
		}
	}
}

func TestCraneOrasAgainstRegistry(t *testing.T) {
	r := StartRegistry(t)
	img := randomOCIImage(t)
	ref := r.Ref("peers/tiny:v1")
	if err := pushImage(t, mustRef(t, ref), img); err != nil {
		t.Fatalf("push: %v", err)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}

	if got := strings.TrimSpace(Crane(t, "digest", ref, "--insecure")); got != want.String() {
		t.Errorf("crane digest = %q, want %s", got, want)
	}

	manifest := Oras(t, "manifest", "fetch", "--plain-http", ref)
	sum := sha256.Sum256([]byte(manifest))
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != want.String() {
		t.Errorf("oras manifest fetch returned bytes with digest %s, want %s:\n%s", got, want, manifest)
	}
	var m struct {
		MediaType string `json:"mediaType"`
		Layers    []any  `json:"layers"`
	}
	if err := json.Unmarshal([]byte(manifest), &m); err != nil || len(m.Layers) != 2 {
		t.Errorf("oras manifest: %v, %d layers\n%s", err, len(m.Layers), manifest)
	}

	// The tools ran with a private HOME.
	for _, kv := range sandboxFor(t).env {
		if v, ok := strings.CutPrefix(kv, "HOME="); ok && v == os.Getenv("HOME") {
			t.Errorf("peer tools run with the real HOME %s", v)
		}
	}
}

func TestPeersWithHtpasswd(t *testing.T) {
	r := StartRegistry(t, WithHtpasswd("peer", NewSecret(t, "peer")))
	img := randomOCIImage(t)
	ref := r.Ref("auth/tiny:v1")
	if err := pushImage(t, mustRef(t, ref), img, remote.WithAuth(&authn.Basic{Username: r.User, Password: r.Password})); err != nil {
		t.Fatalf("push: %v", err)
	}
	want, _ := img.Digest()

	if _, stderr, err := RunPeer(t, "crane", "digest", ref, "--insecure"); err == nil {
		t.Errorf("anonymous crane digest succeeded")
	} else if !strings.Contains(stderr, "401") && !strings.Contains(strings.ToLower(stderr), "unauthorized") {
		t.Errorf("anonymous crane digest: %v, stderr does not mention 401/unauthorized:\n%s", err, stderr)
	}

	// crane keeps the login in the sandbox's DOCKER_CONFIG for later calls.
	Crane(t, "auth", "login", r.Addr, "-u", r.User, "-p", r.Password)
	if got := strings.TrimSpace(Crane(t, "digest", ref, "--insecure")); got != want.String() {
		t.Errorf("crane digest after login = %q, want %s", got, want)
	}
	out := Oras(t, "resolve", "--plain-http", ref)
	if got := strings.TrimSpace(out); got != want.String() {
		t.Errorf("oras resolve = %q, want %s", got, want)
	}
}
