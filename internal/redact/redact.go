// Package redact keeps credentials out of what modelcar prints. It owns one
// process-wide set of secrets: the CLI adds every credential a command
// holds (a password from --password-stdin, what a credential store hands
// out), the registry transports add what they send (Transport: the
// Authorization header's basic credentials or bearer token, a token
// request's password or refresh token), and every text bound for output or
// logs goes through String (or a Writer), which replaces each secret, in
// every form it is known to travel in, by Mask. Body caps how much of a
// response body an error quotes; Transport redacts and caps a registry's
// error answers before any client reads them.
//
// A registry that echoes the request (its Authorization header, the
// password of a token request) in an error body would otherwise have the
// credential printed by login, pull, push or verify.
package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Mask replaces a secret.
const Mask = "[redacted]"

// MaxBody is how much of a response body an error quotes (Body).
const MaxBody = 512

var set struct {
	mu       sync.RWMutex
	values   map[string]bool
	replacer *strings.Replacer
}

// Add adds secret (a password, a token) to the set, with the forms it
// travels in: itself, JSON- and URL-escaped, base64 (standard and URL
// alphabets, padded or not) and, for each of users, "user:secret" plain
// and in base64, as HTTP basic auth and docker's config.json carry it. An
// empty secret is ignored.
func Add(secret string, users ...string) {
	if secret == "" {
		return
	}
	forms := encodings(secret)
	for _, u := range users {
		forms = append(forms, encodings(u+":"+secret)...)
	}
	set.mu.Lock()
	defer set.mu.Unlock()
	if set.values == nil {
		set.values = map[string]bool{}
	}
	added := false
	for _, f := range forms {
		if f != "" && !set.values[f] {
			set.values[f] = true
			added = true
		}
	}
	if !added {
		return
	}
	// Longest first: a form that contains another (user:secret holds
	// secret) is replaced whole.
	olds := make([]string, 0, len(set.values))
	for v := range set.values {
		olds = append(olds, v)
	}
	sort.Slice(olds, func(i, j int) bool {
		if len(olds[i]) != len(olds[j]) {
			return len(olds[i]) > len(olds[j])
		}
		return olds[i] < olds[j]
	})
	pairs := make([]string, 0, 2*len(olds))
	for _, o := range olds {
		pairs = append(pairs, o, Mask)
	}
	set.replacer = strings.NewReplacer(pairs...)
}

// encodings returns s and the forms it is encoded in on the wire.
func encodings(s string) []string {
	j, _ := json.Marshal(s)
	forms := []string{s, string(j[1 : len(j)-1]), url.QueryEscape(s), url.PathEscape(s)}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		forms = append(forms, enc.EncodeToString([]byte(s)))
	}
	return forms
}

// AddAuthorization adds the credentials an HTTP Authorization header value
// carries: the user's password (and the whole user:password) of "Basic
// ...", the token of "Bearer ..." or any other scheme.
func AddAuthorization(value string) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(value), " ")
	cred = strings.TrimSpace(cred)
	if !ok || cred == "" {
		Add(value)
		return
	}
	Add(cred)
	if strings.EqualFold(scheme, "Basic") {
		if b, err := base64.StdEncoding.DecodeString(cred); err == nil {
			if user, pw, ok := strings.Cut(string(b), ":"); ok {
				Add(pw, user)
			}
		}
	}
}

// String returns s with every secret of the set replaced by Mask.
func String(s string) string {
	set.mu.RLock()
	r := set.replacer
	set.mu.RUnlock()
	if r == nil {
		return s
	}
	return r.Replace(s)
}

// Body returns what an error may quote of a response body: trimmed, with
// the secrets of the set replaced, then cut to its first MaxBody bytes
// (whole UTF-8 characters), saying how much was left out. (Redacting
// first, no part of a secret survives at the cut.)
func Body(b []byte) string {
	s := String(strings.TrimSpace(string(b)))
	if len(s) <= MaxBody {
		return s
	}
	cut := MaxBody
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d more bytes not shown)", s[:cut], len(s)-cut)
}

// Writer writes what is written to it with the secrets of the set replaced.
// Each Write is redacted on its own: a secret split across two writes is
// not seen.
type Writer struct{ w io.Writer }

// NewWriter returns a Writer to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write writes String(p); it reports len(p) written when all of that was.
func (w *Writer) Write(p []byte) (int, error) {
	s := String(string(p))
	if _, err := io.WriteString(w.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Unwrap returns the writer underneath (to ask whether it is a terminal).
func (w *Writer) Unwrap() io.Writer { return w.w }

// Transport returns a RoundTripper over next (http.DefaultTransport when
// nil) that keeps credentials out of what a client makes of a registry's
// answers. Before sending a request it adds the credentials the request
// carries to the set: its Authorization header (AddAuthorization) and, for
// an OAuth2 token request (a form POST), its password, refresh_token and
// access_token fields. An error answer's body (status 400 and up), which
// clients quote in their errors, is then read (at most 64 KiB) and replaced
// by ErrorBody's: redacted and capped, the registry's error codes kept.
func Transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return transport{next: next}
}

type transport struct{ next http.RoundTripper }

// maxForm is the largest form body Transport reads for credentials (a
// token request is a few hundred bytes); maxErrorRead is how much of an
// error answer's body it reads.
const (
	maxForm      = 64 << 10
	maxErrorRead = 64 << 10
)

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	for _, v := range req.Header.Values("Authorization") {
		AddAuthorization(v)
	}
	if req.Method == http.MethodPost && req.GetBody != nil && req.ContentLength >= 0 && req.ContentLength <= maxForm &&
		strings.HasPrefix(req.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		if body, err := req.GetBody(); err == nil {
			b, _ := io.ReadAll(io.LimitReader(body, maxForm))
			body.Close()
			if form, err := url.ParseQuery(string(b)); err == nil {
				Add(form.Get("password"), form.Get("username"))
				Add(form.Get("refresh_token"))
				Add(form.Get("access_token"))
			}
		}
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode < 400 || resp.Body == nil || resp.Body == http.NoBody {
		return resp, err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorRead))
	resp.Body.Close()
	body := ErrorBody(b)
	resp.Body = io.NopCloser(strings.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp, nil
}

// maxErrors is how many errors of a registry's error answer ErrorBody keeps.
const maxErrors = 4

// ErrorBody returns what a registry's error answer b may be quoted as. A
// distribution-style JSON error ({"errors": [{"code", "message",
// "detail"}]}, what clients parse) stays one, its first maxErrors errors
// kept, each field (the detail as JSON text) redacted and cut as Body
// does; anything else is Body(b).
func ErrorBody(b []byte) string {
	var doc struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Detail  any    `json:"detail"`
		} `json:"errors"`
	}
	// As clients read it: the first JSON value, whatever follows.
	if json.NewDecoder(bytes.NewReader(b)).Decode(&doc) != nil || len(doc.Errors) == 0 {
		return Body(b)
	}
	type entry struct {
		Code    string `json:"code"`
		Message string `json:"message,omitempty"`
		Detail  string `json:"detail,omitempty"`
	}
	var out struct {
		Errors []entry `json:"errors"`
	}
	for _, e := range doc.Errors[:min(len(doc.Errors), maxErrors)] {
		x := entry{Code: Body([]byte(e.Code)), Message: Body([]byte(e.Message))}
		if s, ok := e.Detail.(string); ok {
			x.Detail = Body([]byte(s))
		} else if e.Detail != nil {
			d, _ := json.Marshal(e.Detail)
			x.Detail = Body(d)
		}
		out.Errors = append(out.Errors, x)
	}
	j, _ := json.Marshal(out)
	return string(j)
}
