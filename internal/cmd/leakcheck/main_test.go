package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/internal/redact"
	"github.com/modelcar/modelcar/internal/testenv"
)

// plantedSecret draws a secret as testenv.NewSecret does, without
// recording it anywhere but in this test's own secrets file: this test
// writes it into files, never into its output.
func plantedSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return testenv.SecretMarker + hex.EncodeToString(b)
}

// setup writes a secrets file recording secret for user, and returns a
// checker loaded from it and the directory to plant files in.
func setup(t *testing.T, user, secret string) (*checker, string, string) {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	for _, f := range testenv.SecretForms(secret, user) {
		b.WriteString(f[0] + "\t" + f[1] + "\n")
	}
	secretsFile := filepath.Join(dir, "secrets.txt")
	if err := os.WriteFile(secretsFile, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadSecrets(secretsFile)
	if err != nil {
		t.Fatal(err)
	}
	files := filepath.Join(dir, "out")
	if err := os.Mkdir(files, 0o755); err != nil {
		t.Fatal(err)
	}
	return c, secretsFile, files
}

func write(t *testing.T, dir, name string, lines ...string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// jsonOutput renders test2json output events carrying text in pieces.
func jsonOutput(t *testing.T, pieces ...string) []string {
	t.Helper()
	var lines []string
	for _, p := range pieces {
		b, err := json.Marshal(map[string]string{"Action": "output", "Package": "example/pkg", "Test": "TestX", "Output": p})
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
	}
	return lines
}

// scan runs the checker over paths and returns the result and report.
func scan(t *testing.T, c *checker, skip string, paths ...string) (*result, string) {
	t.Helper()
	var report strings.Builder
	res, err := c.scanPaths(paths, skip, &report)
	if err != nil {
		t.Fatal(err)
	}
	return res, report.String()
}

// TestLeakcheckCatchesPlantedLeaks plants a recorded secret in each form a
// leak takes (plain in a log, the base64 of user:secret of a basic-auth
// header or docker config.json, split by test2json across two events) and
// the marker of secrets that were never recorded (plain, truncated, and in
// base64 at each alignment). Each is reported at its file and line, and no
// report shows the secret.
func TestLeakcheckCatchesPlantedLeaks(t *testing.T) {
	const user = "ci-bot"
	secret := plantedSecret(t)
	c, secretsFile, dir := setup(t, user, secret)
	if c.secrets != 1 {
		t.Fatalf("%d secrets loaded, want 1", c.secrets)
	}
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + secret))
	half := len(secret) / 2
	unrecorded := plantedSecret(t)
	cases := []struct {
		name  string
		lines []string
		line  int // where the leak is
		what  string
	}{
		{"registry.log", []string{"level=info msg=started", "level=info msg=\"GET /v2/\"", "password=" + secret}, 3, "recorded secret #1, plain form"},
		{"basic.log", []string{"> Authorization: Basic " + basic}, 1, "recorded secret #1, basic-auth form"},
		{"config.json.log", []string{`{"auths":{"127.0.0.1:5000":{"auth":"` + basic + `"}}}`}, 1, "recorded secret #1, basic-auth form"},
		{"split.json", append(jsonOutput(t, "=== RUN   TestX\n", "    x_test.go:9: error: "+secret[:half]), jsonOutput(t, secret[half:]+" and more\n")...), 3, "recorded secret #1, plain form"},
		{"unrecorded.log", []string{"error: " + unrecorded}, 1, "the secret marker, plain"},
		{"truncated.log", []string{"error message carries a secret (" + unrecorded[:12] + "...)"}, 1, "the secret marker, plain"},
	}
	for pad := range 3 {
		other := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("u", 3+pad) + ":" + unrecorded))
		cases = append(cases, struct {
			name  string
			lines []string
			line  int
			what  string
		}{"base64-" + string(rune('a'+pad)) + ".log", []string{"ok", "Authorization: Basic " + other}, 2, "the secret marker, in base64"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sub := filepath.Join(dir, strings.TrimSuffix(tc.name, filepath.Ext(tc.name)))
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			path := write(t, sub, tc.name, tc.lines...)
			res, report := scan(t, c, secretsFile, sub)
			if res.Leaks != 1 {
				t.Fatalf("%d leaks found, want the one planted:\n%s", res.Leaks, report)
			}
			prefix := path + ":" + strconv.Itoa(tc.line) + ": LEAK: "
			if !strings.HasPrefix(report, prefix) || !strings.Contains(report, tc.what) {
				t.Errorf("report is not %q naming %q:\n%s", prefix+"...", tc.what, report)
			}
			for _, v := range []string{secret, basic, unrecorded, unrecorded[:12], secret[:half]} {
				if strings.Contains(report, v) {
					t.Errorf("the report shows a secret")
				}
			}
		})
	}
}

// TestLeakcheckPassesCleanInput: output and logs without any secret, the
// secrets file itself among the files scanned, yield no leak, and every
// file and line is counted.
func TestLeakcheckPassesCleanInput(t *testing.T) {
	c, secretsFile, dir := setup(t, "ci-bot", plantedSecret(t))
	write(t, dir, "test.log", "=== RUN   TestPush", "    push_test.go:12: pushed 127.0.0.1:5000/m@sha256:"+strings.Repeat("ab", 32), "--- PASS: TestPush (0.10s)")
	write(t, dir, "tests.json", jsonOutput(t, "=== RUN   TestY\n", "    y_test.go:3: Authorization: Basic "+base64.StdEncoding.EncodeToString([]byte("ci-bot:not-the-secret"))+"\n")...)
	res, report := scan(t, c, secretsFile, dir, secretsFile)
	if res.Leaks != 0 || report != "" {
		t.Fatalf("%d leaks in clean input:\n%s", res.Leaks, report)
	}
	if res.Files != 2 || res.Lines != 5 {
		t.Errorf("scanned %d files, %d lines; want 2 (the secrets file skipped), 5", res.Files, res.Lines)
	}
	if res.Secrets != 1 || res.Forms < 3+1 {
		t.Errorf("result %+v: want 1 secret, its 3 forms and the marker's", res)
	}
	if s := res.summary(); !strings.Contains(s, "1 secrets") || !strings.Contains(s, ": 0 leaks") {
		t.Errorf("summary %q", s)
	}
}

// TestMarkerFormsAreTheMarkersOwn: the base64 forms of the marker are those
// of the marker wherever it starts, whatever surrounds it.
func TestMarkerFormsAreTheMarkersOwn(t *testing.T) {
	forms := markerForms(testenv.SecretMarker)
	if len(forms) < 4 {
		t.Fatalf("forms %q: want the marker and 3 alignments", forms)
	}
	for pad := range 3 {
		for _, around := range []string{"", "x", "\xff\xfe"} {
			data := strings.Repeat("\x00", pad) + testenv.SecretMarker + around
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
				s := enc.EncodeToString([]byte(strings.Repeat("\xee", 3) + data))
				found := false
				for _, f := range forms[1:] {
					found = found || strings.Contains(s, f)
				}
				if !found {
					t.Errorf("no marker form in the base64 of the marker at offset %d", 3+pad)
				}
			}
		}
	}
}

// TestLeakcheckCatchesAReflectingRegistry: the answers of a registry that
// echoes credentials (testenv.ReflectCredentials: the basic Authorization
// header, the password and user:password it decodes to, a token request's
// form) are caught line by line; the same answers read as modelcar reads
// them, through redact.Transport, show none.
func TestLeakcheckCatchesAReflectingRegistry(t *testing.T) {
	const user = "ci-bot"
	secret := plantedSecret(t)
	c, secretsFile, dir := setup(t, user, secret)
	srv := httptest.NewServer(testenv.ReflectCredentials(http.StatusForbidden))
	defer srv.Close()
	answers := func(rt http.RoundTripper) string {
		client := &http.Client{Transport: rt}
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/m/manifests/v1", nil)
		req.SetBasicAuth(user, secret)
		var all strings.Builder
		for _, do := range []func() (*http.Response, error){
			func() (*http.Response, error) { return client.Do(req) },
			func() (*http.Response, error) {
				return client.PostForm(srv.URL+"/token", url.Values{"grant_type": {"password"}, "username": {user}, "password": {secret}})
			},
		} {
			resp, err := do()
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			all.Write(b)
			all.WriteString("\n")
		}
		return all.String()
	}
	raw := write(t, dir, "reflected.log", answers(http.DefaultTransport))
	res, report := scan(t, c, secretsFile, raw)
	// Each request's answer: its JSON line, then authorization, basic and
	// password lines (the GET), or its form line (the POST).
	if res.Leaks != 6 {
		t.Errorf("%d leaks in the reflected answers, want 6:\n%s", res.Leaks, report)
	}
	if strings.Contains(report, secret) {
		t.Error("the report shows the secret")
	}
	clean := filepath.Join(t.TempDir(), "redacted.log")
	if err := os.WriteFile(clean, []byte(answers(redact.Transport(nil))), 0o644); err != nil {
		t.Fatal(err)
	}
	if res, report := scan(t, c, secretsFile, clean); res.Leaks != 0 {
		t.Errorf("%d leaks in the answers read through redact.Transport:\n%s", res.Leaks, report)
	}
}
