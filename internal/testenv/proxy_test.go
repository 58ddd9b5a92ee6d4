package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// rawClient is a plain HTTP client for talking to the proxy directly: no
// proxy from the environment, no connection reuse between tests.
func rawClient(t *testing.T, timeout time.Duration) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

func doRequest(t *testing.T, c *http.Client, method, u string, body io.Reader, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// startUpload opens a blob upload session in repo through the proxy and
// returns its Location (absolute) and UUID.
func startUpload(t *testing.T, c *http.Client, p *Proxy, repo string) (location, uuid string) {
	t.Helper()
	resp := doRequest(t, c, http.MethodPost, p.URL()+"/v2/"+repo+"/blobs/uploads/", nil, nil)
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST blobs/uploads/: %s", resp.Status)
	}
	location = resp.Header.Get("Location")
	u, err := url.Parse(location)
	if err != nil {
		t.Fatalf("Location %q: %v", location, err)
	}
	if u.Host != p.Addr {
		t.Fatalf("Location %q: host %q, want the proxy's %q (not rewritten)", location, u.Host, p.Addr)
	}
	uuid = uploadSession(u.Path)
	if uuid == "" || resp.Header.Get("Docker-Upload-UUID") != uuid {
		t.Fatalf("Location %q, Docker-Upload-UUID %q: no matching session", location, resp.Header.Get("Docker-Upload-UUID"))
	}
	return location, uuid
}

func findRequest(reqs []RequestLog, pred func(RequestLog) bool) (RequestLog, bool) {
	for _, r := range reqs {
		if pred(r) {
			return r, true
		}
	}
	return RequestLog{}, false
}

// waitRequest polls p.Requests until one matches pred.
func waitRequest(t *testing.T, p *Proxy, within time.Duration, pred func(RequestLog) bool) RequestLog {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		reqs := p.Requests()
		if r, ok := findRequest(reqs, pred); ok {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching request within %v; requests: %+v", within, reqs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitAllDone polls p.Requests until every request is done and returns them.
func waitAllDone(t *testing.T, p *Proxy) []RequestLog {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		reqs := p.Requests()
		if _, busy := findRequest(reqs, func(r RequestLog) bool { return !r.Done }); !busy {
			return reqs
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests still running after 10s: %+v", reqs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProxyRewriteURL(t *testing.T) {
	p := &Proxy{Addr: "127.0.0.1:2000", target: "127.0.0.1:5000"}
	for in, want := range map[string]string{
		"http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x%3D": "http://127.0.0.1:2000/v2/a/blobs/uploads/u?_state=x%3D",
		"http://127.0.0.1:5000":                                  "http://127.0.0.1:2000",
		"http://127.0.0.1:50000/v2/":                             "http://127.0.0.1:50000/v2/",
		"/v2/a/blobs/uploads/u":                                  "/v2/a/blobs/uploads/u",
		"http://example.com/v2/":                                 "http://example.com/v2/",
		"3f2c1b7e-0d2a-4c39-9f8e-2b1d6a7c9e10":                   "3f2c1b7e-0d2a-4c39-9f8e-2b1d6a7c9e10",
	} {
		if got := p.rewriteURL(in); got != want {
			t.Errorf("rewriteURL(%q) = %q, want %q", in, got, want)
		}
	}
	for path, want := range map[string]string{
		"/v2/a/b/blobs/uploads/":     "",
		"/v2/a/b/blobs/uploads/abc":  "abc",
		"/v2/a/b/blobs/uploads/abc/": "abc",
		"/v2/a/b/blobs/sha256:00":    "",
		"/other/blobs/uploads/abc":   "",
	} {
		if got := uploadSession(path); got != want {
			t.Errorf("uploadSession(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestProxyPushPull(t *testing.T) {
	r := StartRegistry(t)
	p := StartProxy(t, r.Addr)

	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for i := 0; i < 2; i++ {
		l, err := random.Layer(1<<20, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}

	// The first blob PATCH fails with 503; ggcr treats 5xx as temporary and
	// retries the whole upload (new session) after its back-off.
	p.Inject(Fault{Method: http.MethodPatch, PathContains: "/blobs/uploads/", Status: http.StatusServiceUnavailable})

	ref, err := name.ParseReference(p.Ref("models/proxied:v1"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push through the proxy: %v", err)
	}

	reqs := waitAllDone(t, p)
	faulted, ok := findRequest(reqs, func(r RequestLog) bool { return r.Status == http.StatusServiceUnavailable })
	if !ok {
		t.Fatalf("no 503 in the request log: %+v", reqs)
	}
	if faulted.Method != http.MethodPatch || faulted.Fault == "" || faulted.BytesIn != 0 || faulted.Session == "" {
		t.Errorf("faulted request %+v: want a PATCH of a session, marked with its fault, nothing forwarded", faulted)
	}
	var patches int
	for _, rl := range reqs {
		if strings.Contains(rl.Path, "?") {
			t.Errorf("logged path %q carries a query", rl.Path)
		}
		if rl.Method == http.MethodPatch {
			patches++
		}
	}
	if patches < 4 { // config + 2 layers, plus the retried one
		t.Errorf("%d PATCH requests, want at least 4 (3 blobs and a retry); log: %+v", patches, reqs)
	}

	// Read it back straight from the registry.
	direct, err := name.ParseReference(r.Ref("models/proxied:v1"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if got := pulledDigest(t, direct); got != want {
		t.Errorf("pulled digest %s, want %s", got, want)
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		size, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		total += size
		if got := p.BytesUpFor(d.String()); got < size {
			t.Errorf("BytesUpFor(%s) = %d, want >= layer size %d", d, got, size)
		}
		put, ok := findRequest(reqs, func(r RequestLog) bool { return r.Method == http.MethodPut && r.Digest == d.String() })
		if !ok {
			t.Errorf("no PUT ?digest=%s in the log", d)
			continue
		}
		if got := p.BytesUpSession(put.Session); got != p.BytesUpFor(d.String()) {
			t.Errorf("BytesUpSession(%s) = %d, BytesUpFor(%s) = %d: want equal (one session per blob)", put.Session, got, d, p.BytesUpFor(d.String()))
		}
	}
	if got := p.BytesUp(); got < total {
		t.Errorf("BytesUp = %d, want >= %d", got, total)
	}

	// Range requests and their answers pass through.
	c := rawClient(t, 30*time.Second)
	d0, _ := layers[0].Digest()
	resp := doRequest(t, c, http.MethodGet, p.URL()+"/v2/models/proxied/blobs/"+d0.String(), nil, map[string]string{"Range": "bytes=0-99"})
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPartialContent || len(got) != 100 || !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes 0-99/") {
		t.Errorf("ranged GET: %s, %d bytes, Content-Range %q; want 206, 100 bytes, bytes 0-99/...", resp.Status, len(got), resp.Header.Get("Content-Range"))
	}

	// Pulling through the proxy counts the bytes sent down.
	p.Reset()
	if len(p.Requests()) != 0 || p.BytesUp() != 0 || p.BytesUpFor(d0.String()) != 0 {
		t.Errorf("Reset left stats behind")
	}
	pulled, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("pull through the proxy: %v", err)
	}
	if got, err := pulled.Digest(); err != nil || got != want {
		t.Errorf("pulled through the proxy: digest %s (%v), want %s", got, err, want)
	}
	pulledLayers, err := pulled.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range pulledLayers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("reading a layer through the proxy: %v", err)
		}
	}
	// A client can have read a response before the proxy's handler counted
	// its last write: the counts are final once the request is Done.
	var down int64
	for _, rl := range waitAllDone(t, p) {
		if rl.Method == http.MethodGet && strings.Contains(rl.Path, "/blobs/") {
			down += rl.BytesOut
		}
	}
	if down < total {
		t.Errorf("blob GETs through the proxy sent %d bytes, want >= %d", down, total)
	}
}

func TestProxyAuthHeaders(t *testing.T) {
	pw := NewSecret(t, "alice")
	r := StartRegistry(t, WithHtpasswd("alice", pw))
	p := StartProxy(t, r.Addr)
	c := rawClient(t, 30*time.Second)

	resp := doRequest(t, c, http.MethodGet, p.URL()+"/v2/", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("anonymous GET /v2/: %s, WWW-Authenticate %q; want 401 with a Basic challenge", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	req, _ := http.NewRequest(http.MethodGet, p.URL()+"/v2/", nil)
	req.SetBasicAuth("alice", pw)
	resp2, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ with Authorization: %s, want 200", resp2.Status)
	}
}

func TestProxyStatusFaults(t *testing.T) {
	r := StartRegistry(t)
	p := StartProxy(t, r.Addr)
	c := rawClient(t, 30*time.Second)

	p.Inject(Fault{Method: "get", PathContains: "/v2/", Status: http.StatusTooManyRequests, RetryAfter: 7})
	resp := doRequest(t, c, http.MethodGet, p.URL()+"/v2/", nil, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("GET /v2/ with a 429 fault: %s", resp.Status)
	}
	if got := resp.Header.Get("Retry-After"); got != "7" {
		t.Errorf("Retry-After %q, want 7", got)
	}
	if !strings.Contains(string(body), "TOOMANYREQUESTS") {
		t.Errorf("429 body %q lacks the TOOMANYREQUESTS error code", body)
	}
	// Disarmed after one hit.
	resp = doRequest(t, c, http.MethodGet, p.URL()+"/v2/", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ after the fault: %s, want 200", resp.Status)
	}

	// Times, and a fault that does not match is left armed.
	p.Inject(Fault{Method: http.MethodDelete, Status: http.StatusForbidden})
	p.Inject(Fault{PathContains: "/v2/", Status: http.StatusInternalServerError, Times: 2})
	for i, want := range []int{500, 500, 200} {
		resp := doRequest(t, c, http.MethodGet, p.URL()+"/v2/", nil, nil)
		if resp.StatusCode != want {
			t.Errorf("GET %d: %s, want %d", i, resp.Status, want)
		}
	}
	var got []int
	for _, rl := range waitAllDone(t, p) {
		got = append(got, rl.Status)
	}
	if want := []int{429, 200, 500, 500, 200}; !equalInts(got, want) {
		t.Errorf("logged statuses %v, want %v", got, want)
	}
	p.mu.Lock()
	left := len(p.faults)
	p.mu.Unlock()
	if left != 1 {
		t.Errorf("%d faults armed, want 1 (the DELETE one)", left)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestProxyStall(t *testing.T) {
	r := StartRegistry(t)
	p := StartProxy(t, r.Addr)

	// A short stall delays the request, then forwards it.
	p.Inject(Fault{Method: http.MethodGet, PathContains: "/v2/", Stall: 300 * time.Millisecond})
	begin := time.Now()
	resp := doRequest(t, rawClient(t, 30*time.Second), http.MethodGet, p.URL()+"/v2/", nil, nil)
	if resp.StatusCode != http.StatusOK || time.Since(begin) < 300*time.Millisecond {
		t.Errorf("stalled GET: %s after %v; want 200 after >= 300ms", resp.Status, time.Since(begin))
	}

	// A long stall outlasts the client's timeout: the client fails
	// promptly, and the proxy drops the request once the client is gone.
	p.Reset()
	p.Inject(Fault{Method: http.MethodGet, PathContains: "/v2/", Stall: time.Minute})
	begin = time.Now()
	_, err := rawClient(t, 300*time.Millisecond).Get(p.URL() + "/v2/")
	elapsed := time.Since(begin)
	var nerr net.Error
	if err == nil || !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Errorf("GET with a 1m stall and a 300ms client timeout: err %v, want a timeout", err)
	}
	if elapsed > 5*time.Second {
		t.Errorf("client failed after %v, want promptly (~300ms)", elapsed)
	}
	rl := waitRequest(t, p, 10*time.Second, func(r RequestLog) bool { return r.Done })
	if rl.Status != 0 || !strings.Contains(rl.Err, "stall ended early") {
		t.Errorf("stalled request %+v: want no status and a 'stall ended early' error", rl)
	}
}

// TestProxyResetAfterBytes cuts a blob PATCH after 1 MiB and looks at what
// the registry kept of it.
func TestProxyResetAfterBytes(t *testing.T) {
	r := StartRegistry(t)
	p := StartProxy(t, r.Addr)
	c := rawClient(t, time.Minute)
	const repo = "models/cut"
	location, uuid := startUpload(t, c, p, repo)

	const total, cutAt = 8 << 20, 1 << 20
	data := make([]byte, total)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	p.Inject(Fault{Method: http.MethodPatch, PathContains: "/blobs/uploads/", ResetAfterBytes: cutAt})
	req, err := http.NewRequest(http.MethodPatch, location, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("PATCH of %d bytes with ResetAfterBytes %d: got a response (%s), want a connection error", total, cutAt, resp.Status)
	}
	// Depending on timing the client's transport reports the reset from
	// its reader or its writer (ECONNRESET, EPIPE, EOF, or "use of closed
	// network connection" once the reader has closed the socket).
	var opErr *net.OpError
	if !errors.As(err, &opErr) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("PATCH error %v: want a connection error", err)
	}
	t.Logf("client saw: %v", err)

	patch := waitRequest(t, p, 10*time.Second, func(r RequestLog) bool { return r.Method == http.MethodPatch && r.Done })
	if patch.Status != 0 || patch.BytesIn != cutAt || patch.Session != uuid || !strings.Contains(patch.Err, "reset") {
		t.Errorf("cut PATCH logged as %+v; want status 0, %d bytes in, session %s, a reset error", patch, cutAt, uuid)
	}
	if got := p.BytesUpSession(uuid); got != cutAt {
		t.Errorf("BytesUpSession(%s) = %d, want %d", uuid, got, cutAt)
	}

	// What the registry wrote for the session, once it stopped growing.
	dataFile := filepath.Join(r.Root, "docker/registry/v2/repositories", repo, "_uploads", uuid, "data")
	kept := stableSize(t, dataFile)
	t.Logf("registry kept %d of the %d bytes forwarded before the reset in %s", kept, cutAt, dataFile)
	if kept > cutAt {
		t.Errorf("registry stored %d bytes, more than the %d forwarded", kept, cutAt)
	}

	// The upload's status, asked with the Location the POST returned (its
	// _state token records offset 0).
	resp = doRequest(t, c, http.MethodGet, location, nil, nil)
	body, _ := io.ReadAll(resp.Body)
	rng := resp.Header.Get("Range")
	t.Logf("GET upload status after the reset: %s, Range %q, body %q", resp.Status, rng, strings.TrimSpace(string(body)))
	_, statErr := os.Stat(dataFile)
	t.Logf("upload data file after the status GET: stat error %v", statErr)
	if kept == 0 {
		// Nothing kept: the session is intact at offset 0.
		if resp.StatusCode != http.StatusNoContent || rng != "0-0" {
			t.Errorf("status of an upload with nothing kept: %s, Range %q; want 204, 0-0", resp.Status, rng)
		}
	} else {
		// distribution 2.8 keeps what it received before the client
		// dropped, but the upload URL's _state token still says offset 0:
		// it refuses the mismatch with 404 BLOB_UPLOAD_INVALID ("upload
		// resumed at wrong offset" in its log), so the session is lost to
		// the client, which must start a new upload.
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "BLOB_UPLOAD_INVALID") {
			t.Errorf("status of an upload with %d bytes kept: %s %q; want 404 BLOB_UPLOAD_INVALID", kept, resp.Status, body)
		}
	}

	// At the TCP level the cut is a reset, not an orderly close.
	location3, _ := startUpload(t, c, p, repo)
	p.Inject(Fault{Method: http.MethodPatch, PathContains: "/blobs/uploads/", ResetAfterBytes: cutAt})
	u3, err := url.Parse(location3)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, werr := fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", u3.RequestURI(), p.Addr, total)
	for off := 0; off < total && werr == nil; off += 64 << 10 {
		_, werr = conn.Write(data[off : off+64<<10])
	}
	got, rerr := io.ReadAll(conn)
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(rerr, syscall.ECONNRESET) {
		t.Errorf("raw PATCH: write error %v, read error %v, read %q; want ECONNRESET from one of them", werr, rerr, got)
	}
	conn.Close()

	// The registry is not wedged: a new session takes the whole blob in
	// one PUT, and the bytes are attributed to its digest.
	location, uuid2 := startUpload(t, c, p, repo)
	dgst := fmt.Sprintf("sha256:%x", sha256.Sum256(data))
	u, err := url.Parse(location)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("digest", dgst)
	u.RawQuery = q.Encode()
	resp = doRequest(t, c, http.MethodPut, u.String(), bytes.NewReader(data), map[string]string{"Content-Type": "application/octet-stream"})
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT of the whole blob: %s", resp.Status)
	}
	if got := p.BytesUpFor(dgst); got != total {
		t.Errorf("BytesUpFor(%s) = %d, want %d (session %s; the cut session %s never got a PUT)", dgst, got, total, uuid2, uuid)
	}
}

// stableSize waits until the file at path exists and its size has not
// changed for a while, and returns that size.
func stableSize(t *testing.T, path string) int64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	last, since := int64(-1), time.Now()
	for {
		fi, err := os.Stat(path)
		size := int64(-1)
		if err == nil {
			size = fi.Size()
		}
		if size != last {
			last, since = size, time.Now()
		} else if size >= 0 && time.Since(since) > 500*time.Millisecond {
			return size
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: size not stable within 15s (last %d, %v)", path, last, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
