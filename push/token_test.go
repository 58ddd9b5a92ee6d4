package push_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// tokUser is the user of token-auth registries; its password comes from
// testenv.NewSecret, per registry (Registry.Password).
const tokUser = "modelcar"

// tokenRegistry starts a registry with bearer-token auth and a credential
// store holding the user's password for both of its addresses: the
// registry's own (realm on another origin, as Docker Hub's auth.docker.io)
// and the token server's (realm on the same origin, as ghcr.io/token).
func tokenRegistry(t *testing.T) (*testenv.Registry, credentials.Store) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: real registry with token auth")
	}
	reg := testenv.StartRegistry(t, testenv.WithTokenAuth(tokUser, testenv.NewSecret(t, tokUser)))
	return reg, storeFor(t, auth.Credential{Username: tokUser, Password: reg.Password}, reg.Addr, reg.SameOriginAddr())
}

func storeFor(t *testing.T, cred auth.Credential, hosts ...string) credentials.Store {
	t.Helper()
	store := credentials.NewMemoryStore()
	for _, h := range hosts {
		if err := store.Put(context.Background(), h, cred); err != nil {
			t.Fatal(err)
		}
	}
	return store
}

// tokenAddrs names the two ways to reach a token-auth registry.
func tokenAddrs(reg *testenv.Registry) []struct{ name, addr string } {
	return []struct{ name, addr string }{
		{"separate-realm-origin", reg.Addr},
		{"same-origin-realm", reg.SameOriginAddr()},
	}
}

// pushGrant reports whether a token granted push on repo.
func pushGrant(reg *testenv.Registry, repo string) bool {
	return slices.ContainsFunc(reg.GrantedScopes(), func(s string) bool {
		actions, ok := strings.CutPrefix(s, "repository:"+repo+":")
		return ok && slices.Contains(strings.Split(actions, ","), "push")
	})
}

// TestTokenAuthCopyPull: modelcar pushes a packed model through the token
// flow (chunked, several chunks, and monolithic) and pulls it back.
func TestTokenAuthCopyPull(t *testing.T) {
	reg, store := tokenRegistry(t)
	m, p := packed(t, 21, 3<<20, pack.FormatTar)
	want := p.Digest.String()
	for _, a := range tokenAddrs(reg) {
		for _, mode := range []struct {
			name string
			opts []push.Option
		}{
			{"chunked", []push.Option{push.WithChunkSize(256 << 10)}},
			{"monolithic", []push.Option{push.WithMonolithic(true)}},
		} {
			t.Run(a.name+"/"+mode.name, func(t *testing.T) {
				repo := "models/tok-" + a.name + "-" + mode.name
				dst := a.addr + "/" + repo + ":v1"
				before := reg.TokensIssued()
				res := copyT(t, p.Tagged, dst, append(mode.opts, push.WithCredentials(store))...)
				if res.Digest != want || res.Reference != a.addr+"/"+repo+"@"+want {
					t.Fatalf("result %+v, packed %s", res, want)
				}
				if res.Copied == 0 || res.BytesSent == 0 {
					t.Errorf("nothing uploaded: %+v", res)
				}
				if reg.TokensIssued() == before {
					t.Fatal("the push succeeded without the token server issuing a token")
				}
				if !pushGrant(reg, repo) {
					t.Errorf("no push grant for %s among %q", repo, reg.GrantedScopes())
				}
				dir := filepath.Join(t.TempDir(), "out")
				got, err := push.Pull(context.Background(), dst, dir, push.PullOptions{},
					push.WithPlainHTTP(true), push.WithCredentials(store))
				if err != nil {
					t.Fatalf("Pull(%s): %v", dst, err)
				}
				if got.Digest != want {
					t.Errorf("pulled %s, pushed %s", got.Digest, want)
				}
				sameTree(t, m.Dir, dir)
			})
		}
	}
}

// TestTokenAuthPackStraightToRegistry: push.Pack streams layers to a
// token-auth registry (a PATCH with no length, which can't be replayed
// after a 401: the token must already be there).
func TestTokenAuthPackStraightToRegistry(t *testing.T) {
	reg, store := tokenRegistry(t)
	for _, a := range tokenAddrs(reg) {
		t.Run(a.name, func(t *testing.T) {
			m, p := packed(t, 22, 3<<20, pack.FormatTar)
			repo := "direct/tok-" + a.name
			dst := a.addr + "/" + repo + ":v1"
			before := reg.TokensIssued()
			res, err := push.Pack(context.Background(), m.Dir, dst, []pack.Option{pack.WithFormat(pack.FormatTar), pack.WithCacheDir("")},
				push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithCredentials(store))
			if err != nil {
				t.Fatalf("Pack to %s: %v", dst, err)
			}
			if res.Digest != p.Digest || res.Reference != a.addr+"/"+repo+"@"+p.Digest.String() {
				t.Fatalf("packed to registry %s (%s), to layout %s", res.Digest, res.Reference, p.Digest)
			}
			if reg.TokensIssued() == before || !pushGrant(reg, repo) {
				t.Errorf("tokens issued %d (before %d), grants %q", reg.TokensIssued(), before, reg.GrantedScopes())
			}
			if _, err := push.Verify(context.Background(), dst, m.Dir, "", push.WithPlainHTTP(true), push.WithCredentials(store)); err != nil {
				t.Errorf("verify: %v", err)
			}
		})
	}
}

// TestTokenAuthFailures: without credentials, or with a wrong password,
// pushes fail with the auth failure named; no error message, failed or
// after tokens were issued, carries the password or a token.
func TestTokenAuthFailures(t *testing.T) {
	reg, store := tokenRegistry(t)
	m, p := packed(t, 23, 1<<20, pack.FormatTar)
	wrong := testenv.NewSecret(t, tokUser)
	var errs []error
	expectAuthError := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: succeeded", what)
			return
		}
		errs = append(errs, err)
		msg := strings.ToLower(err.Error())
		if !strings.Contains(msg, "401") && !strings.Contains(msg, "unauthorized") {
			t.Errorf("%s: error does not name the auth failure: %v", what, err)
		}
	}
	for _, a := range tokenAddrs(reg) {
		t.Run(a.name, func(t *testing.T) {
			dst := a.addr + "/private/tok:v1"
			opts := func(s credentials.Store) []push.Option {
				return []push.Option{push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithCredentials(s)}
			}
			anonymous := credentials.NewMemoryStore()
			badPassword := storeFor(t, auth.Credential{Username: tokUser, Password: wrong}, a.addr)

			_, err := push.Copy(context.Background(), p.Tagged, dst, opts(anonymous)...)
			expectAuthError("Copy without credentials", err)
			_, err = push.Copy(context.Background(), p.Tagged, dst, opts(badPassword)...)
			expectAuthError("Copy with a wrong password", err)
			_, err = push.Pack(context.Background(), m.Dir, dst, []pack.Option{pack.WithCacheDir("")}, opts(anonymous)...)
			expectAuthError("Pack without credentials", err)
			_, err = push.Pull(context.Background(), dst, t.TempDir(), push.PullOptions{}, opts(badPassword)...)
			expectAuthError("Pull with a wrong password", err)
			if n := reg.TokensIssued(); n != 0 && a.addr == reg.Addr {
				t.Errorf("%d tokens issued to failed logins", n)
			}

			// With tokens issued and cached in the client, errors of
			// another kind.
			copyT(t, p.Tagged, dst, push.WithCredentials(store))
			_, err = push.Pull(context.Background(), a.addr+"/private/tok:missing", t.TempDir(), push.PullOptions{}, opts(store)...)
			if err == nil {
				t.Error("Pull of a missing tag succeeded")
			} else {
				errs = append(errs, err)
			}
			_, err = push.Copy(context.Background(), a.addr+"/private/nothing-here:v1", a.addr+"/private/copy:v1", opts(store)...)
			if err == nil {
				t.Error("Copy of a missing image succeeded")
			} else {
				errs = append(errs, err)
			}
		})
	}
	tokens := reg.IssuedTokens()
	if len(tokens) == 0 {
		t.Fatal("no token issued at all")
	}
	for _, err := range errs {
		msg := err.Error()
		t.Logf("error: %s", msg)
		for _, secret := range append([]string{reg.Password, wrong}, tokens...) {
			if strings.Contains(msg, secret) {
				t.Errorf("error message carries a secret: %s", testenv.Mask(msg))
			}
		}
		// Nor the signature or payload part of a token alone.
		for _, tok := range tokens {
			for _, part := range strings.Split(tok, ".") {
				if len(part) > 16 && strings.Contains(msg, part) {
					t.Errorf("error message carries part of a token: %s", strings.ReplaceAll(msg, part, "***"))
				}
			}
		}
	}
}

// TestTokenAuthResumeAcrossRuns: an upload that failed at its commit is
// resumed by a new Copy (a new client, no token cached) whose first request
// on the upload is the uploader's own GET on the saved session, which must
// get a token with the push scope. (The failure is at the commit, not
// mid-chunk: distribution 2.8 refuses to resume a session whose last PATCH
// was cut, "upload resumed at wrong offset", whatever the auth.)
func TestTokenAuthResumeAcrossRuns(t *testing.T) {
	reg, store := tokenRegistry(t)
	proxy := testenv.StartProxy(t, reg.Addr)
	store = storeFor(t, auth.Credential{Username: tokUser, Password: reg.Password}, proxy.Addr)
	_, p := packed(t, 25, 2<<20, pack.FormatTar)
	dst := proxy.Ref("resume/tok") + ":v1"
	state := t.TempDir()
	opts := []push.Option{push.WithPlainHTTP(true), push.WithStateDir(state), push.WithCredentials(store),
		push.WithChunkSize(256 << 10), push.WithJobs(1)}

	proxy.Inject(testenv.Fault{Method: http.MethodPut, PathContains: "/blobs/uploads/", Times: 100, Status: http.StatusForbidden})
	if _, err := push.Copy(context.Background(), p.Tagged, dst, opts...); err == nil {
		t.Fatal("the first push survived a refused commit")
	}
	proxy.ClearFaults()
	var cut string
	for _, r := range proxy.Requests() {
		if r.Fault != "" {
			cut = r.Session
		}
	}
	if cut == "" {
		t.Fatal("the fault never hit an upload session")
	}
	proxy.Reset()
	var mu sync.Mutex
	var resumed int64
	res, err := push.Copy(context.Background(), p.Tagged, dst, append(opts, push.WithProgress(func(e push.Event) {
		mu.Lock()
		resumed = max(resumed, e.Resumed)
		mu.Unlock()
	}))...)
	if err != nil {
		t.Fatalf("second push: %v", err)
	}
	if res.Digest != p.Digest.String() {
		t.Errorf("pushed %s, packed %s", res.Digest, p.Digest)
	}
	var statuses []string
	for _, r := range proxy.Requests() {
		if r.Session == cut {
			statuses = append(statuses, r.Method+" "+strconv.Itoa(r.Status))
		}
	}
	// The GET meets the challenge, gets a token, and is answered.
	if want := []string{"GET 401", "GET 204", "PUT 201"}; !slices.Equal(statuses, want) || resumed == 0 {
		t.Errorf("session %s in the second push: %q (resumed at %d), want %q and a resume", cut, statuses, resumed, want)
	}
	if !pushGrant(reg, "resume/tok") {
		t.Errorf("no push grant among %q", reg.GrantedScopes())
	}
}

// TestTokenAuthExpiryMidPush: the token expires while a blob upload is in
// flight (the registry answers 401 invalid_token to a request that carried
// a token which was valid when cached); the push must fetch a new token and
// finish.
func TestTokenAuthExpiryMidPush(t *testing.T) {
	reg, store := tokenRegistry(t)
	const lifetime = 2 * time.Second
	reg.SetTokenLifetime(lifetime)
	proxy := testenv.StartProxy(t, reg.Addr)
	store = storeFor(t, auth.Credential{Username: tokUser, Password: reg.Password}, reg.Addr, reg.SameOriginAddr(), proxy.Addr)
	src := testenv.StartRegistry(t)
	m, p := packed(t, 24, 2<<20, pack.FormatTar)
	copyT(t, p.Tagged, src.Ref("plain/m")+":v1")
	for _, tc := range []struct {
		name   string
		method string
		src    string
		opts   []push.Option
		pack   bool
	}{
		{name: "chunked", method: "PATCH", src: p.Tagged, opts: []push.Option{push.WithChunkSize(256 << 10)}},
		{name: "monolithic", method: "PUT", src: p.Tagged, opts: []push.Option{push.WithMonolithic(true)}},
		{name: "from-registry-chunked", method: "PATCH", src: src.Ref("plain/m") + ":v1", opts: []push.Option{push.WithChunkSize(256 << 10)}},
		{name: "pack-stream", method: "PATCH", pack: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy.Reset()
			dst := proxy.Ref("expiry/"+tc.name) + ":v1"
			proxy.Inject(testenv.Fault{Method: tc.method, PathContains: "/blobs/uploads/", Stall: lifetime + 1500*time.Millisecond})
			before := reg.TokensIssued()
			opts := append([]push.Option{push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithCredentials(store)}, tc.opts...)
			var err error
			var got string
			if tc.pack {
				var res *pack.Result
				res, err = push.Pack(context.Background(), m.Dir, dst, []pack.Option{pack.WithFormat(pack.FormatTar), pack.WithCacheDir("")}, opts...)
				if err == nil {
					got = res.Digest.String()
				}
			} else {
				var res *push.Result
				res, err = push.Copy(context.Background(), tc.src, dst, opts...)
				if err == nil {
					got = res.Digest
				}
			}
			if err != nil {
				for _, r := range proxy.Requests() {
					t.Logf("%s %s -> %d %s", r.Method, r.Path, r.Status, r.Fault)
				}
				t.Fatalf("push across a token expiry: %v", err)
			}
			hit := false
			for _, r := range proxy.Requests() {
				hit = hit || (r.Fault != "" && r.Status == http.StatusUnauthorized)
			}
			if !hit {
				t.Errorf("the stalled request did not meet an expired token")
			}
			if got != p.Digest.String() {
				t.Errorf("pushed %s, packed %s", got, p.Digest)
			}
			if reg.TokensIssued() < before+2 {
				t.Errorf("%d tokens issued, want a refresh after the expiry", reg.TokensIssued()-before)
			}
		})
	}
}

// TestTokenAuthExpiryUnseekableSource: the token expires while the source
// is slow mid-blob, and the source is a registry that does not serve byte
// ranges (no Accept-Ranges), so oras-go hands the uploader a plain,
// unseekable response body. The next chunk goes out with the expired token.
//
// Known modelcar bug, skipped until push/upload.go is fixed: that PATCH
// gets 401; oras-go's auth.Client fetches a new token but cannot replay
// the request (no GetBody: "request body is not rewindable"); the uploader
// marks the source dirty and, as it cannot seek, gives up on the blob ("the
// source cannot be re-read"), though the registry refused the request
// before reading its body.
func TestTokenAuthExpiryUnseekableSource(t *testing.T) {
	reg, _ := tokenRegistry(t)
	const lifetime = 2 * time.Second
	reg.SetTokenLifetime(lifetime)
	store := storeFor(t, auth.Credential{Username: tokUser, Password: reg.Password}, reg.Addr)
	src := testenv.StartRegistry(t)
	_, p := packed(t, 26, 6<<20, pack.FormatTar)
	copyT(t, p.Tagged, src.Ref("plain/m")+":v1")
	// The source: no ranges, and one blob pauses past the token's life
	// after its first 600 KiB (chunks of 512 KiB: distribution answers the
	// 401 of a bigger body before reading it).
	var pauseOnce sync.Once
	paused := make(chan struct{})
	slow := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: src.Addr})
	slow.ModifyResponse = func(r *http.Response) error {
		r.Header.Del("Accept-Ranges")
		if r.Request.Method == http.MethodGet && strings.Contains(r.Request.URL.Path, "/blobs/sha256:") && r.ContentLength > 1<<20 {
			r.Body = &pausingBody{ReadCloser: r.Body, after: 600 << 10, pause: func() {
				pauseOnce.Do(func() { time.Sleep(lifetime + 1500*time.Millisecond); close(paused) })
			}}
		}
		return nil
	}
	front := httptest.NewServer(slow)
	t.Cleanup(front.Close)

	res, err := push.Copy(context.Background(), strings.TrimPrefix(front.URL, "http://")+"/plain/m:v1", reg.Ref("expiry/unseekable")+":v1",
		push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithCredentials(store), push.WithChunkSize(512<<10))
	select {
	case <-paused:
	default:
		t.Fatal("the source never paused")
	}
	if err != nil {
		t.Fatalf("push across a token expiry from an unseekable source: %v", err)
	}
	if res.Digest != p.Digest.String() {
		t.Errorf("pushed %s, packed %s", res.Digest, p.Digest)
	}
}

// pausingBody calls pause once after bytes have been read.
type pausingBody struct {
	io.ReadCloser
	after, n int64
	pause    func()
}

func (b *pausingBody) Read(p []byte) (int, error) {
	if b.n >= b.after {
		b.pause()
	} else if rest := b.after - b.n; int64(len(p)) > rest {
		p = p[:rest]
	}
	k, err := b.ReadCloser.Read(p)
	b.n += int64(k)
	return k, err
}
