package main

import (
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestCountRequests(t *testing.T) {
	log := filepath.Join(t.TempDir(), "registry.log")
	lines := `time="2026-11-27T09:55:37Z" level=info msg="response completed" go.version=go1.19.8 http.request.host="127.0.0.1:1" http.request.method=POST http.request.uri=/v2/a/blobs/uploads/ http.response.status=202
time="2026-11-27T09:55:37Z" level=info msg="response completed" http.request.method=PATCH http.response.status=202
time="2026-11-27T09:55:37Z" level=info msg="response completed" http.request.method=PATCH http.response.status=202
time="2026-11-27T09:55:37Z" level=info msg="authorized request" http.request.method=PATCH
time="2026-11-27T09:55:37Z" level=info msg="response completed" http.request.method=PUT http.response.status=201
`
	if err := os.WriteFile(log, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	got := countRequests(log)
	if got["POST"] != 1 || got["PATCH"] != 2 || got["PUT"] != 1 || len(got) != 3 {
		t.Fatalf("countRequests = %v", got)
	}
}

// TestRawPut checks the monolithic upload against a fake registry that
// answers POST with a Location carrying its own query, as distribution does.
func TestRawPut(t *testing.T) {
	content := []byte(strings.Repeat("modelcar", 1000))
	d := ocispec.Descriptor{Digest: digest.FromBytes(content), Size: int64(len(content))}
	var put []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v2/bench/raw/blobs/uploads/":
			w.Header().Set("Location", "/v2/bench/raw/blobs/uploads/u1?_state=abc")
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodPut && r.URL.Path == "/v2/bench/raw/blobs/uploads/u1":
			if r.URL.Query().Get("_state") != "abc" || r.URL.Query().Get("digest") != d.Digest.String() || r.ContentLength != d.Size {
				http.Error(w, "bad PUT "+r.URL.String(), http.StatusBadRequest)
				return
			}
			put, _ = io.ReadAll(r.Body)
			sum := sha256.Sum256(put)
			w.Header().Set("Docker-Content-Digest", digest.NewDigestFromBytes(digest.SHA256, sum[:]).String())
			w.WriteHeader(http.StatusCreated)
		default:
			http.Error(w, "unexpected", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	reg := &registry{addr: strings.TrimPrefix(srv.URL, "http://")}
	if err := rawPut(srv.Client(), reg, d, path); err != nil {
		t.Fatal(err)
	}
	if string(put) != string(content) {
		t.Fatalf("registry got %d bytes, want %d", len(put), len(content))
	}
}

func TestVerifyPush(t *testing.T) {
	const good = "sha256:94816ac13debe9c5c82f86fe33ec64a5e27d1004d7e169639a1c98dd9d335c64"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodHead || r.URL.Path != "/v2/bench/m/manifests/v1" || !strings.Contains(r.Header.Get("Accept"), ocispec.MediaTypeImageManifest) {
			http.Error(w, "unexpected", http.StatusNotFound)
			return
		}
		w.Header().Set("Docker-Content-Digest", good)
	}))
	defer srv.Close()
	reg := &registry{addr: strings.TrimPrefix(srv.URL, "http://")}
	if err := verifyPush(reg, "bench/m:v1", good); err != nil {
		t.Fatal(err)
	}
	err := verifyPush(reg, "bench/m:v1", "sha256:"+strings.Repeat("0", 64))
	if err == nil || !strings.Contains(err.Error(), "DIGEST CHECK FAILED") {
		t.Fatalf("a different digest was not caught: %v", err)
	}
	if err := verifyPush(reg, "bench/other:v1", good); err == nil {
		t.Fatal("a missing tag was not caught")
	}
}
