package testenv

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// Reflector is a registry that echoes credentials in its error answers, as
// some proxies and misconfigured registries do: a reverse proxy in front of
// a registry that answers the requests its pick function chooses itself,
// with ReflectCredentials, and passes every other request on. Started by
// StartReflector; closed in t.Cleanup.
type Reflector struct {
	// Addr is host:port, always 127.0.0.1:PORT.
	Addr string
}

// StartReflector starts a Reflector on 127.0.0.1 in front of target (a
// registry's or a Proxy's "127.0.0.1:PORT"). Requests for which pick
// returns true are answered with ReflectCredentials(status); the others
// reach the registry with their Host unchanged, so the URLs it answers with
// point back at the Reflector.
func StartReflector(t testing.TB, target string, status int, pick func(*http.Request) bool) *Reflector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: reflector: %v", err)
	}
	to := &url.URL{Scheme: "http", Host: target}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(to)
		pr.Out.Host = pr.In.Host
	}}
	reflect := ReflectCredentials(status)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pick(r) {
			reflect(w, r)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &Reflector{Addr: ln.Addr().String()}
}

// Ref returns ADDR/REPO, a reference to repo through the Reflector.
func (r *Reflector) Ref(repo string) string { return r.Addr + "/" + repo }

// ReflectCredentials answers with status and an error body that echoes the
// credentials the request carries, in every form a server might: a
// distribution-style JSON error (code DENIED, or UNAUTHORIZED with a basic
// challenge for 401) whose message quotes the Authorization header and
// whose detail holds it, the user and password it decodes to, "user:password",
// a token request's form and 4 KiB of a "trace" (a body too long to quote
// whole); then the same as plain text.
func ReflectCredentials(status int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		detail := map[string]string{"authorization": authz, "trace": strings.Repeat("at registry.(*handler).serve\n", 140)}
		if user, pw, ok := r.BasicAuth(); ok {
			detail["user"], detail["password"], detail["basic"] = user, pw, user+":"+pw
		}
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
			detail["form"] = string(b)
		} else {
			io.Copy(io.Discard, io.LimitReader(r.Body, 1<<30))
		}
		code := "DENIED"
		if status == http.StatusUnauthorized {
			code = "UNAUTHORIZED"
			w.Header().Set("WWW-Authenticate", `Basic realm="reflector"`)
		}
		body, _ := json.Marshal(map[string]any{"errors": []map[string]any{{
			"code": code, "message": "request with Authorization: " + authz + " refused", "detail": detail,
		}}})
		var text strings.Builder
		for _, k := range []string{"authorization", "basic", "password", "form"} {
			if detail[k] != "" {
				text.WriteString("\n" + k + ": " + detail[k])
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
		io.WriteString(w, text.String())
	}
}
