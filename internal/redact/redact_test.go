package redact_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/internal/redact"
)

// leaked returns the forms of secret (for user) that s still shows.
func leaked(s, user, secret string) []string {
	var out []string
	forms := []string{secret, user + ":" + secret}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding} {
		forms = append(forms, enc.EncodeToString([]byte(secret)), enc.EncodeToString([]byte(user+":"+secret)))
	}
	for _, f := range forms {
		if strings.Contains(s, f) {
			out = append(out, f)
		}
	}
	return out
}

func TestAddRedactsEveryForm(t *testing.T) {
	const user, secret = "ci-bot", `pa<ss>w&rd"/+?=ü-1`
	redact.Add(secret, user)
	j, _ := json.Marshal(map[string]string{"password": secret, "auth": user + ":" + secret})
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + secret))
	texts := []string{
		"password " + secret + " refused",
		`{"errors":[{"code":"DENIED","detail":` + string(j) + `}]}`,
		"Authorization: Basic " + basic,
		"auth=" + base64.RawURLEncoding.EncodeToString([]byte(user+":"+secret)),
		"form: password=" + url.QueryEscape(secret) + "&username=" + user,
		"b64 " + base64.StdEncoding.EncodeToString([]byte(secret)),
	}
	for _, text := range texts {
		got := redact.String(text)
		if l := leaked(got, user, secret); len(l) > 0 || strings.Contains(got, url.QueryEscape(secret)) || strings.Contains(got, string(j[13:30])) {
			t.Errorf("String(%q) = %q: still shows %q", text, got, l)
		}
		if !strings.Contains(got, redact.Mask) {
			t.Errorf("String(%q) = %q: no %s", text, got, redact.Mask)
		}
	}
	if got := redact.String("Authorization: Basic " + basic); got != "Authorization: Basic "+redact.Mask {
		t.Errorf("the basic form is not replaced whole: %q", got)
	}
	if got := redact.String("nothing secret here"); got != "nothing secret here" {
		t.Errorf("String changed clean text: %q", got)
	}
}

func TestAddAuthorization(t *testing.T) {
	const user, pw, token = "robot", "hunter2-basic-pw", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJyb2JvdCJ9.c2lnbmF0dXJl"
	redact.AddAuthorization("Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw)))
	redact.AddAuthorization("Bearer " + token)
	for _, text := range []string{"password was " + pw, "token " + token, "user:pw " + user + ":" + pw} {
		if got := redact.String(text); strings.Contains(got, pw) || strings.Contains(got, token) {
			t.Errorf("String(%q) = %q", text, got)
		}
	}
	if got := redact.String("user " + user); got != "user "+user {
		t.Errorf("the user name alone is not a secret: %q", got)
	}
}

func TestBody(t *testing.T) {
	const secret = "body-secret-1234567"
	redact.Add(secret)
	if got := redact.Body([]byte("  denied: " + secret + "\n")); got != "denied: "+redact.Mask {
		t.Errorf("Body = %q", got)
	}
	// A secret across the cut is replaced before cutting: no part shows.
	long := strings.Repeat("é", (redact.MaxBody-5)/2) + secret + strings.Repeat("x", 10000)
	got := redact.Body([]byte(long))
	if strings.Contains(got, secret[:4]) || !strings.HasSuffix(got, " more bytes not shown)") {
		t.Errorf("Body of %d bytes = %q", len(long), got)
	}
	if i := strings.Index(got, "..."); i > redact.MaxBody || !strings.HasPrefix(got, "éé") {
		t.Errorf("Body quotes %d bytes, want at most %d whole characters", i, redact.MaxBody)
	}
}

func TestWriter(t *testing.T) {
	const secret = "writer-secret-xyz"
	redact.Add(secret)
	var buf bytes.Buffer
	w := redact.NewWriter(&buf)
	n, err := fmt.Fprintf(w, "Error: registry said %s\n", secret)
	if err != nil || n != len("Error: registry said \n")+len(secret) {
		t.Errorf("Write = %d, %v", n, err)
	}
	if got := buf.String(); got != "Error: registry said "+redact.Mask+"\n" {
		t.Errorf("written %q", got)
	}
	if w.Unwrap() != &buf {
		t.Error("Unwrap does not return the writer underneath")
	}
}

// TestTransport: the credentials a request carries are known before the
// answer (which may echo them) is read.
func TestTransport(t *testing.T) {
	const user, pw, refresh = "tr-user", "transport-pw-77", "refresh-token-88"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, "you sent %q and %q", r.Header.Get("Authorization"), r.PostForm.Encode())
	}))
	defer srv.Close()
	c := &http.Client{Transport: redact.Transport(nil)}
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.SetBasicAuth(user, pw)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	resp.Body.Close()
	resp, err = c.PostForm(srv.URL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "service": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	b.ReadFrom(resp.Body)
	resp.Body.Close()
	got := redact.String(b.String())
	if strings.Contains(got, pw) || strings.Contains(got, refresh) || len(leaked(got, user, pw)) > 0 {
		t.Errorf("the answers, redacted, still show a credential: %s", got)
	}
}

// TestErrorBody: a registry's JSON error stays one that clients parse (the
// codes kept), with every field redacted and capped; other bodies are
// quoted as Body does.
func TestErrorBody(t *testing.T) {
	const secret = "error-body-secret-42"
	redact.Add(secret)
	long := strings.Repeat("at handler.serve\n", 400)
	in, _ := json.Marshal(map[string]any{"errors": []map[string]any{
		{"code": "DENIED", "message": "denied for " + secret, "detail": map[string]string{"password": secret, "trace": long}},
		{"code": "UNAUTHORIZED", "message": long, "detail": "plain " + secret},
		{"code": "A"}, {"code": "B"}, {"code": "C"},
	}})
	got := redact.ErrorBody(append(in, "\ntrailing text "+secret...))
	var doc struct {
		Errors []struct{ Code, Message, Detail string }
	}
	if err := json.Unmarshal([]byte(got), &doc); err != nil {
		t.Fatalf("ErrorBody is not JSON: %v: %s", err, got)
	}
	if len(doc.Errors) != 4 || doc.Errors[0].Code != "DENIED" || doc.Errors[1].Code != "UNAUTHORIZED" {
		t.Errorf("codes not kept (or more than 4 errors): %s", got)
	}
	if strings.Contains(got, secret) || !strings.Contains(doc.Errors[0].Message, redact.Mask) || !strings.Contains(doc.Errors[1].Detail, redact.Mask) {
		t.Errorf("not redacted: %s", got)
	}
	for _, e := range doc.Errors {
		if len(e.Message) > redact.MaxBody+40 || len(e.Detail) > redact.MaxBody+40 {
			t.Errorf("a field of %d/%d bytes is not capped", len(e.Message), len(e.Detail))
		}
	}
	if got := redact.ErrorBody([]byte("<html>" + secret + long + "</html>")); strings.Contains(got, secret) || len(got) > redact.MaxBody+40 {
		t.Errorf("ErrorBody of HTML = %d bytes: %.80q", len(got), got)
	}
}
