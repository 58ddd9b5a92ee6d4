package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The names the token-auth registry and its token server agree on: the
// registry's challenge carries TokenService, tokens carry both.
const (
	TokenService = "modelcar-test-registry"
	TokenIssuer  = "modelcar-test-issuer"
)

// tokenLifetime is the default expires_in of tokens, Docker Hub's.
const tokenLifetime = 300 * time.Second

// registryLeeway is the clock skew distribution 2.8 tolerates past a
// token's exp claim (token.Leeway).
const registryLeeway = 60 * time.Second

// WithTokenAuth makes the registry use the Docker token protocol the way
// Docker Hub, GHCR and Harbor do: every request without a valid bearer
// token gets 401 with a challenge naming an in-process token server
// (realm http://127.0.0.1:PORT/token, closed in t.Cleanup), which issues
// ES256 JWTs to HTTP basic auth with user and password, granting exactly
// the scopes asked for. Anonymous and wrong-password token requests get 401.
//
// The token server speaks both flows of the spec: GET /token with basic
// auth (what oras-go and go-containerregistry use for user and password)
// and the OAuth2 POST /token form (grant_type=password, or refresh_token
// with a refresh token it handed out for offline_token=true or
// access_type=offline). Registry.TokensIssued, IssuedTokens and
// GrantedScopes tell what it did.
//
// The registry is reachable two ways. At r.Addr the realm is on another
// origin (another port), like Docker Hub's auth.docker.io; oras-go (and so
// modelcar) accepts that for a loopback registry, go-containerregistry
// (v0.22+) refuses a loopback realm that is not the registry's own
// host:port. At r.SameOriginAddr() the token server also reverse-proxies
// the registry API, so /token and /v2/ share one origin, like ghcr.io/token
// or Harbor's /service/token; every client accepts that.
//
// The password (draw it with NewSecret) and every token issued are
// recorded (RecordSecret); refresh tokens and the jti claim of access
// tokens start with SecretMarker.
//
// WithTokenAuth replaces WithHtpasswd; don't combine them.
func WithTokenAuth(user, password string) RegistryOption {
	return func(o *registryOptions) {
		o.user, o.password = user, password
		o.auth = func(t testing.TB, r *Registry) []string {
			t.Helper()
			if user == "" || password == "" || strings.ContainsAny(user, ":\n") {
				t.Fatalf("testenv: WithTokenAuth: want a user name without ':' and a password, got user %q", user)
			}
			// r.Addr is only picked after this hook; it is read per
			// request, once the registry is up.
			ts, err := startTokenServer(user, password, func() string { return r.Addr })
			// Tokens are recorded as they are issued, from the server's
			// goroutines: a failure fails the test without stopping it.
			ts.record = func(secret string) {
				if err := recordSecret(secret); err != nil {
					t.Errorf("testenv: recording a token: %v", err)
				}
			}
			if err != nil {
				t.Fatalf("testenv: token server: %v", err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("testenv: token server %s issued %d tokens; granted %q", ts.realm(), ts.issuedCount(), ts.grantedScopes())
				}
				ts.srv.Close()
				ts.backend.CloseIdleConnections()
			})
			bundle := filepath.Join(r.dir, "token-cert.pem")
			if err := os.WriteFile(bundle, ts.certPEM, 0o644); err != nil {
				t.Fatalf("testenv: %v", err)
			}
			r.tokens = ts
			q := strconv.Quote
			return []string{
				`auth:`,
				`  token:`,
				`    realm: ` + q(ts.realm()),
				`    service: ` + q(TokenService),
				`    issuer: ` + q(TokenIssuer),
				`    rootcertbundle: ` + q(bundle),
			}
		}
	}
}

// TokensIssued is how many access tokens the token server of a WithTokenAuth
// registry has issued (0 for other registries).
func (r *Registry) TokensIssued() int {
	if r.tokens == nil {
		return 0
	}
	return r.tokens.issuedCount()
}

// IssuedTokens returns every access and refresh token the token server has
// handed out, oldest first, so tests can check that none leaks into errors
// or logs.
func (r *Registry) IssuedTokens() []string {
	if r.tokens == nil {
		return nil
	}
	r.tokens.mu.Lock()
	defer r.tokens.mu.Unlock()
	return slices.Clone(r.tokens.secrets)
}

// GrantedScopes returns the scopes granted, one "TYPE:NAME:ACTION,..." per
// resource per token, in the order issued.
func (r *Registry) GrantedScopes() []string {
	if r.tokens == nil {
		return nil
	}
	return r.tokens.grantedScopes()
}

// SetTokenLifetime makes the tokens issued from now on expire d after they
// are issued, as the registry sees it (their exp claim is set
// registryLeeway earlier, to make up for the skew distribution allows;
// expires_in says d), so that tests can make tokens expire mid-push.
// Clients that cached a token get 401 with error="invalid_token" once it
// has expired. The default is 300s (exp claim 300s after issue).
func (r *Registry) SetTokenLifetime(d time.Duration) {
	if r.tokens == nil {
		panic("testenv: SetTokenLifetime on a registry without WithTokenAuth")
	}
	r.tokens.mu.Lock()
	defer r.tokens.mu.Unlock()
	r.tokens.lifetime, r.tokens.expBias = d, registryLeeway
}

// TokenRealm is the token server's URL (empty without WithTokenAuth).
func (r *Registry) TokenRealm() string {
	if r.tokens == nil {
		return ""
	}
	return r.tokens.realm()
}

// SameOriginAddr is the token server's host:port, which also serves the
// registry API (reverse-proxied to r.Addr, Host kept so that upload
// Locations point back at it): the registry with its realm on its own
// origin. Empty without WithTokenAuth.
func (r *Registry) SameOriginAddr() string {
	if r.tokens == nil {
		return ""
	}
	return strings.TrimPrefix(r.tokens.srv.URL, "http://")
}

// SameOriginRef is Ref for SameOriginAddr: "127.0.0.1:TOKENPORT/repo".
func (r *Registry) SameOriginRef(repo string) string {
	return r.SameOriginAddr() + "/" + strings.TrimPrefix(repo, "/")
}

// tokenServer is the in-process Docker token server of WithTokenAuth.
type tokenServer struct {
	srv            *httptest.Server
	backend        *http.Transport // to the registry
	user, password string
	key            *ecdsa.PrivateKey
	certDER        []byte
	certPEM        []byte

	mu       sync.Mutex
	issued   int
	lifetime time.Duration     // of tokens, as the registry sees it
	expBias  time.Duration     // how much earlier than lifetime the exp claim is
	flows    map[string]int    // tokens issued per flow: "get", "password", "refresh_token"
	secrets  []string          // access and refresh tokens handed out
	granted  []string          // scopes granted, per token
	refresh  map[string]string // refresh token -> subject
	record   func(secret string)
}

// resourceActions is one entry of a token's access claim.
type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (ra resourceActions) String() string {
	return ra.Type + ":" + ra.Name + ":" + strings.Join(ra.Actions, ",")
}

// startTokenServer starts the token server on 127.0.0.1:0; requests for
// other paths than /token go to the registry at backend().
func startTokenServer(user, password string, backend func() string) (*tokenServer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: TokenIssuer},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ts := &tokenServer{
		user: user, password: password, key: key, certDER: der,
		certPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		refresh:  map[string]string{},
		flows:    map[string]int{},
		lifetime: tokenLifetime,
	}
	tr := &http.Transport{Proxy: nil}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: backend()})
			pr.Out.Host = pr.In.Host // distribution builds Locations from it
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/token", ts.serveToken)
	mux.Handle("/", rp)
	ts.srv = httptest.NewServer(mux) // 127.0.0.1:0
	ts.backend = tr
	return ts, nil
}

func (ts *tokenServer) realm() string { return ts.srv.URL + "/token" }

func (ts *tokenServer) issuedCount() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.issued
}

func (ts *tokenServer) grantedScopes() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return slices.Clone(ts.granted)
}

// checkPassword compares in constant time, as a real server would.
func (ts *tokenServer) checkPassword(user, password string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(ts.user))
	p := subtle.ConstantTimeCompare([]byte(password), []byte(ts.password))
	return u&p == 1
}

// tokenError answers in the distribution error format, which registry
// clients turn into their error messages.
func tokenError(w http.ResponseWriter, status int, code, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="modelcar-test-token"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]string{{"code": code, "message": msg}},
		// OAuth2 clients read these.
		"error": strings.ToLower(code), "error_description": msg,
	})
}

func (ts *tokenServer) serveToken(w http.ResponseWriter, req *http.Request) {
	var (
		subject string
		scopes  []string
		offline bool
		oauth2  bool
		flow    = "get"
	)
	switch req.Method {
	case http.MethodGet:
		// https://distribution.github.io/distribution/spec/auth/token/
		user, password, ok := req.BasicAuth()
		if !ok {
			tokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
		if !ts.checkPassword(user, password) {
			tokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", "incorrect username or password")
			return
		}
		subject = user
		q := req.URL.Query()
		if !ts.checkService(w, q.Get("service")) {
			return
		}
		for _, s := range q["scope"] {
			scopes = append(scopes, strings.Fields(s)...)
		}
		offline = q.Get("offline_token") == "true"
	case http.MethodPost:
		// https://distribution.github.io/distribution/spec/auth/oauth/
		oauth2 = true
		if err := req.ParseForm(); err != nil {
			tokenError(w, http.StatusBadRequest, "INVALID_REQUEST", "unreadable form")
			return
		}
		f := req.PostForm
		if f.Get("client_id") == "" {
			tokenError(w, http.StatusBadRequest, "INVALID_REQUEST", "missing client_id")
			return
		}
		if !ts.checkService(w, f.Get("service")) {
			return
		}
		flow = f.Get("grant_type")
		switch flow {
		case "password":
			if !ts.checkPassword(f.Get("username"), f.Get("password")) {
				tokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", "incorrect username or password")
				return
			}
			subject = f.Get("username")
		case "refresh_token":
			ts.mu.Lock()
			sub, ok := ts.refresh[f.Get("refresh_token")]
			ts.mu.Unlock()
			if !ok {
				tokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid refresh token")
				return
			}
			subject = sub
		default:
			tokenError(w, http.StatusBadRequest, "UNSUPPORTED_GRANT_TYPE", "unsupported grant_type")
			return
		}
		scopes = strings.Fields(f.Get("scope"))
		offline = f.Get("access_type") == "offline"
	default:
		w.Header().Set("Allow", "GET, POST")
		tokenError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method not allowed")
		return
	}

	access, err := parseScopes(scopes)
	if err != nil {
		tokenError(w, http.StatusBadRequest, "INVALID_REQUEST", err.Error())
		return
	}
	now := time.Now()
	ts.mu.Lock()
	lifetime, bias := ts.lifetime, ts.expBias
	ts.mu.Unlock()
	token, err := ts.sign(subject, access, now, now.Add(lifetime-bias))
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	resp := map[string]any{
		"access_token": token,
		"expires_in":   int(max(lifetime/time.Second, 1)),
		"issued_at":    now.UTC().Format(time.RFC3339),
	}
	if oauth2 {
		resp["scope"] = strings.Join(scopes, " ")
	} else {
		resp["token"] = token
	}
	var refresh string
	if offline {
		refresh = SecretMarker + randomHex(32)
		resp["refresh_token"] = refresh
	}
	if ts.record != nil {
		ts.record(token)
		ts.record(refresh)
	}

	ts.mu.Lock()
	ts.issued++
	ts.flows[flow]++
	ts.secrets = append(ts.secrets, token)
	if refresh != "" {
		ts.secrets = append(ts.secrets, refresh)
		ts.refresh[refresh] = subject
	}
	for _, a := range access {
		ts.granted = append(ts.granted, a.String())
	}
	ts.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(resp)
}

// checkService rejects tokens asked for another registry's service; an
// empty service (some clients omit it) means ours.
func (ts *tokenServer) checkService(w http.ResponseWriter, service string) bool {
	if service != "" && service != TokenService {
		tokenError(w, http.StatusBadRequest, "INVALID_REQUEST", fmt.Sprintf("unknown service %q", service))
		return false
	}
	return true
}

// parseScopes parses "TYPE:NAME:ACTION[,ACTION...]" scopes (NAME may hold
// colons, TYPE may carry a "(class)"), merging repeated resources; the grant
// is exactly the actions asked for.
func parseScopes(scopes []string) ([]resourceActions, error) {
	var out []resourceActions
	index := map[[2]string]int{}
	for _, s := range scopes {
		typ, rest, ok1 := strings.Cut(s, ":")
		i := strings.LastIndex(rest, ":")
		if !ok1 || i <= 0 || typ == "" {
			return nil, fmt.Errorf("malformed scope %q", s)
		}
		name, actions := rest[:i], rest[i+1:]
		if j := strings.IndexByte(typ, '('); j > 0 && strings.HasSuffix(typ, ")") {
			typ = typ[:j]
		}
		k := [2]string{typ, name}
		n, ok := index[k]
		if !ok {
			n = len(out)
			index[k] = n
			out = append(out, resourceActions{Type: typ, Name: name, Actions: []string{}})
		}
		for _, a := range strings.Split(actions, ",") {
			if a != "" && !slices.Contains(out[n].Actions, a) {
				out[n].Actions = append(out[n].Actions, a)
			}
		}
	}
	return out, nil
}

// sign makes an ES256 JWT the way distribution 2.8 verifies it: the signing
// certificate in the x5c header (checked against rootcertbundle), and the
// claims iss, sub, aud, exp, nbf, iat, jti and access.
func (ts *tokenServer) sign(subject string, access []resourceActions, now, exp time.Time) (string, error) {
	if access == nil {
		access = []resourceActions{}
	}
	header := map[string]any{
		"typ": "JWT",
		"alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(ts.certDER)},
	}
	claims := map[string]any{
		"iss":    TokenIssuer,
		"sub":    subject,
		"aud":    TokenService,
		"exp":    exp.Unix(),
		"nbf":    now.Add(-time.Second).Unix(),
		"iat":    now.Unix(),
		"jti":    SecretMarker + randomHex(16), // recognisable in the base64 claims
		"access": access,
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString(hb) + "." + enc.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		return "", err
	}
	// JWS ES256: R and S as fixed 32-byte big-endian integers.
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + enc.EncodeToString(sig), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
