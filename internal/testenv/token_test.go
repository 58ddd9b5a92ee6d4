package testenv

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"oras.land/oras-go/v2"
	orasremote "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// tokUser is the user of the token tests; passwords come from NewSecret.
const tokUser = "modelcar"

// getToken asks the token server for a token the way docker does.
func getToken(t *testing.T, r *Registry, user, password string, scopes ...string) (int, map[string]any) {
	t.Helper()
	q := url.Values{"service": {TokenService}, "scope": scopes}
	req, err := http.NewRequest(http.MethodGet, r.TokenRealm()+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	return tokenResponse(t, req)
}

func tokenResponse(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := rawClient(t, 10*time.Second).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s %s: %s, undecodable body: %v", req.Method, req.URL, resp.Status, err)
	}
	return resp.StatusCode, body
}

// jwtParts decodes a compact JWT's header and claims.
func jwtParts(t *testing.T, tok string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a compact JWS", tok)
	}
	for i, dst := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	return header, claims
}

// registryStatus sends method on the registry's path with a bearer token
// and returns the status and WWW-Authenticate challenge.
func registryStatus(t *testing.T, r *Registry, method, path, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, r.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := rawClient(t, 10*time.Second).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Www-Authenticate")
}

func TestTokenAuthConfig(t *testing.T) {
	lines := []string{"auth:", "  token:", `    realm: "http://127.0.0.1:1/token"`}
	cfg := RegistryConfig("/r", "127.0.0.1:1", "/h/htpasswd", lines...)
	if !strings.Contains(cfg, strings.Join(lines, "\n")+"\n") || strings.Contains(cfg, "htpasswd") {
		t.Errorf("config with token auth:\n%s", cfg)
	}
	if strings.Count(cfg, "auth:") != 1 {
		t.Errorf("config has %d auth sections:\n%s", strings.Count(cfg, "auth:"), cfg)
	}
}

// TestTokenAuthProtocol checks the token server itself and that the real
// registry accepts its tokens for exactly the access they grant.
func TestTokenAuthProtocol(t *testing.T) {
	wrong := NewSecret(t, tokUser)
	pw := NewSecret(t, tokUser)
	r := StartRegistry(t, WithTokenAuth(tokUser, pw))
	if r.User != tokUser || r.Password != pw {
		t.Errorf("User, Password = %q, %q", r.User, Mask(r.Password))
	}
	cfg, err := os.ReadFile(r.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"auth:\n  token:\n", `realm: "` + r.TokenRealm() + `"`,
		`service: "` + TokenService + `"`, `issuer: "` + TokenIssuer + `"`, "rootcertbundle: "} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if !strings.HasPrefix(r.TokenRealm(), "http://127.0.0.1:") {
		t.Errorf("realm %q", r.TokenRealm())
	}

	// The registry challenges anonymous clients with our realm.
	code, challenge := registryStatus(t, r, http.MethodGet, "/v2/tok/proto/tags/list", "")
	if code != http.StatusUnauthorized || !strings.Contains(challenge, `realm="`+r.TokenRealm()+`"`) ||
		!strings.Contains(challenge, `service="`+TokenService+`"`) || !strings.Contains(challenge, `scope="repository:tok/proto:pull"`) {
		t.Fatalf("anonymous GET: %d, challenge %q", code, challenge)
	}

	if code, body := getToken(t, r, "", "", "repository:tok/proto:pull"); code != http.StatusUnauthorized {
		t.Errorf("anonymous token request: %d %v, want 401", code, body)
	}
	if code, body := getToken(t, r, tokUser, wrong, "repository:tok/proto:pull"); code != http.StatusUnauthorized {
		t.Errorf("token request with a wrong password: %d %v, want 401", code, body)
	}
	if n := r.TokensIssued(); n != 0 {
		t.Errorf("%d tokens issued to failed requests", n)
	}

	code, body := getToken(t, r, tokUser, pw, "repository:tok/proto:pull", "repository:tok/other:pull,push")
	if code != http.StatusOK {
		t.Fatalf("token request: %d %v", code, body)
	}
	tok, _ := body["token"].(string)
	if tok == "" || body["access_token"] != tok || body["expires_in"] != float64(300) || body["issued_at"] == nil {
		t.Fatalf("token response %v", body)
	}
	header, claims := jwtParts(t, tok)
	if header["alg"] != "ES256" {
		t.Errorf("alg %v", header["alg"])
	}
	x5c, _ := header["x5c"].([]any)
	if len(x5c) != 1 {
		t.Fatalf("x5c %v", header["x5c"])
	}
	der, _ := base64.StdEncoding.DecodeString(x5c[0].(string))
	if _, err := x509.ParseCertificate(der); err != nil {
		t.Errorf("x5c certificate: %v", err)
	}
	if claims["iss"] != TokenIssuer || claims["aud"] != TokenService || claims["sub"] != tokUser || claims["jti"] == "" {
		t.Errorf("claims %v", claims)
	}
	for _, c := range []string{"exp", "nbf", "iat"} {
		if _, ok := claims[c].(float64); !ok {
			t.Errorf("claim %s: %v", c, claims[c])
		}
	}
	access, _ := json.Marshal(claims["access"])
	if want := `[{"actions":["pull"],"name":"tok/proto","type":"repository"},{"actions":["pull","push"],"name":"tok/other","type":"repository"}]`; string(access) != want {
		t.Errorf("access %s, want %s", access, want)
	}
	if n := r.TokensIssued(); n != 1 {
		t.Errorf("TokensIssued = %d, want 1", n)
	}
	if got := r.IssuedTokens(); !slices.Equal(got, []string{tok}) {
		t.Errorf("IssuedTokens = %q", got)
	}

	// distribution verifies the signature, x5c chain, issuer, audience and
	// access: the pull token reads (the repository does not exist: 404, not
	// 401) but cannot start an upload.
	if code, ch := registryStatus(t, r, http.MethodGet, "/v2/tok/proto/tags/list", tok); code != http.StatusNotFound {
		t.Errorf("GET with a pull token: %d (%s), want 404", code, ch)
	}
	if code, ch := registryStatus(t, r, http.MethodPost, "/v2/tok/proto/blobs/uploads/", tok); code != http.StatusUnauthorized ||
		!strings.Contains(ch, "insufficient_scope") {
		t.Errorf("POST upload with a pull-only token: %d (%s), want 401 insufficient_scope", code, ch)
	}
	if code, ch := registryStatus(t, r, http.MethodPost, "/v2/tok/other/blobs/uploads/", tok); code != http.StatusAccepted {
		t.Errorf("POST upload with a push token: %d (%s), want 202", code, ch)
	}
	// Through the same-origin address, uploads stay on it.
	req, err := http.NewRequest(http.MethodPost, "http://"+r.SameOriginAddr()+"/v2/tok/other/blobs/uploads/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := rawClient(t, 10*time.Second).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(loc, "http://"+r.SameOriginAddr()+"/v2/tok/other/blobs/uploads/") {
		t.Errorf("POST upload at %s: %s, Location %q", r.SameOriginAddr(), resp.Status, loc)
	}
	// A tampered token is refused.
	bad := tok[:len(tok)-4] + "AAAA"
	if bad == tok {
		bad = tok[:len(tok)-4] + "BBBB"
	}
	if code, _ := registryStatus(t, r, http.MethodGet, "/v2/tok/proto/tags/list", bad); code != http.StatusUnauthorized {
		t.Errorf("GET with a tampered token: %d, want 401", code)
	}

	// The OAuth2 form flow: password grant with a refresh token, then the
	// refresh token grant.
	post := func(form url.Values) (int, map[string]any) {
		req, err := http.NewRequest(http.MethodPost, r.TokenRealm(), strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return tokenResponse(t, req)
	}
	form := url.Values{"grant_type": {"password"}, "username": {tokUser}, "password": {wrong},
		"service": {TokenService}, "client_id": {"test"}, "scope": {"repository:tok/proto:pull"}}
	if code, body := post(form); code != http.StatusUnauthorized {
		t.Errorf("OAuth2 password grant with a wrong password: %d %v", code, body)
	}
	form.Set("password", pw)
	form.Set("access_type", "offline")
	code, body = post(form)
	refresh, _ := body["refresh_token"].(string)
	if code != http.StatusOK || body["access_token"] == nil || refresh == "" {
		t.Fatalf("OAuth2 password grant: %d %v", code, body)
	}
	form = url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh},
		"service": {TokenService}, "client_id": {"test"}, "scope": {"repository:tok/proto:pull"}}
	code, body = post(form)
	at, _ := body["access_token"].(string)
	if code != http.StatusOK || at == "" {
		t.Fatalf("OAuth2 refresh grant: %d %v", code, body)
	}
	if code, ch := registryStatus(t, r, http.MethodGet, "/v2/tok/proto/tags/list", at); code != http.StatusNotFound {
		t.Errorf("GET with an OAuth2 token: %d (%s), want 404", code, ch)
	}
	form.Set("refresh_token", "nope")
	if code, body := post(form); code != http.StatusUnauthorized {
		t.Errorf("OAuth2 refresh grant with an unknown token: %d %v", code, body)
	}
	if n := r.TokensIssued(); n != 3 {
		t.Errorf("TokensIssued = %d, want 3", n)
	}
	if f := r.tokens.flows; f["get"] != 1 || f["password"] != 1 || f["refresh_token"] != 1 {
		t.Errorf("tokens per flow %v", f)
	}
}

// TestTokenAuthPushPull: go-containerregistry pushes and pulls through the
// token flow; anonymous and wrong-password pushes get 401. It goes through
// SameOriginAddr: go-containerregistry refuses a loopback realm on another
// port than the registry's.
func TestTokenAuthPushPull(t *testing.T) {
	wrong := NewSecret(t, tokUser)
	pw := NewSecret(t, tokUser)
	r := StartRegistry(t, WithTokenAuth(tokUser, pw))
	img := randomOCIImage(t)
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, r.SameOriginRef("tok/tiny:v1"))

	var terr *transport.Error
	err = pushImage(t, ref, img)
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous push: got %v, want a 401 transport error", err)
	}
	err = pushImage(t, ref, img, remote.WithAuth(&authn.Basic{Username: tokUser, Password: wrong}))
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("push with a wrong password: got %v, want a 401 transport error", err)
	}
	if n := r.TokensIssued(); n != 0 {
		t.Fatalf("%d tokens issued before any valid request", n)
	}

	basic := remote.WithAuth(&authn.Basic{Username: r.User, Password: r.Password})
	if err := pushImage(t, ref, img, basic); err != nil {
		t.Fatalf("authenticated push: %v", err)
	}
	pushed := r.TokensIssued()
	if pushed == 0 {
		t.Fatal("push succeeded without the token server issuing a token")
	}
	if !slices.ContainsFunc(r.GrantedScopes(), func(s string) bool {
		return strings.HasPrefix(s, "repository:tok/tiny:") && strings.Contains(s, "push")
	}) {
		t.Errorf("no push grant for tok/tiny among %q", r.GrantedScopes())
	}
	if got := pulledDigest(t, ref, basic); got != want {
		t.Errorf("pulled digest %s, want %s", got, want)
	}
	if r.TokensIssued() <= pushed {
		t.Errorf("pull with a fresh client issued no token")
	}
	if _, err := remote.Image(ref); !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous pull: got %v, want a 401 transport error", err)
	}
	// The same image at the registry's own address.
	if code, _ := registryStatus(t, r, http.MethodGet, "/v2/tok/tiny/manifests/v1", ""); code != http.StatusUnauthorized {
		t.Errorf("anonymous GET at %s: %d, want 401", r.Addr, code)
	}
}

// TestTokenAuthOras pushes with oras-go, at both addresses, with the
// distribution GET flow and forced onto the OAuth2 POST flow.
func TestTokenAuthOras(t *testing.T) {
	pw := NewSecret(t, tokUser)
	r := StartRegistry(t, WithTokenAuth(tokUser, pw))
	for _, tc := range []struct {
		name, addr string
		oauth2     bool
	}{
		{"direct", r.Addr, false},
		{"direct-oauth2", r.Addr, true},
		{"same-origin", r.SameOriginAddr(), false},
		{"same-origin-oauth2", r.SameOriginAddr(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo, err := orasremote.NewRepository(tc.addr + "/tok/" + tc.name)
			if err != nil {
				t.Fatal(err)
			}
			tr := &http.Transport{Proxy: nil}
			defer tr.CloseIdleConnections()
			repo.PlainHTTP = true
			repo.Client = &auth.Client{
				Client:             &http.Client{Transport: tr},
				Cache:              auth.NewCache(),
				Credential:         auth.StaticCredential(tc.addr, auth.Credential{Username: tokUser, Password: pw}),
				ForceAttemptOAuth2: tc.oauth2,
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			before := r.TokensIssued()
			r.tokens.mu.Lock()
			posts := r.tokens.flows["password"]
			r.tokens.mu.Unlock()
			desc, err := oras.PushBytes(ctx, repo, "application/octet-stream", []byte("hello "+tc.name))
			if err != nil {
				t.Fatalf("oras push: %v", err)
			}
			if ok, err := repo.Exists(ctx, desc); err != nil || !ok {
				t.Errorf("pushed blob: exists %v, %v", ok, err)
			}
			if r.TokensIssued() == before {
				t.Error("no token issued")
			}
			r.tokens.mu.Lock()
			posted := r.tokens.flows["password"] > posts
			r.tokens.mu.Unlock()
			if posted != tc.oauth2 {
				t.Errorf("OAuth2 password grant used: %v, want %v", posted, tc.oauth2)
			}
		})
	}
}
