package testenv

import (
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Credentials in tests. Every credential the test environment makes is
// recognisable: NewSecret draws it as SecretMarker followed by random hex,
// and the token server's refresh tokens and JWT IDs carry the marker too.
// Every credential it makes or is handed (WithHtpasswd, WithTokenAuth,
// NewSecret, issued tokens) is also recorded, with the base64 forms that
// HTTP basic auth and docker's config.json carry, to the file
// $MODELCAR_SECRETS_FILE names, when set. `make test` and
// `make test-faults` set it, and internal/cmd/leakcheck then searches the
// suite's whole output and the logs the test environment kept
// ($MODELCAR_TESTENV_LOGS) for any recorded secret or the marker.

// SecretMarker starts every secret NewSecret makes. It is 9 bytes long, a
// multiple of 3, so its base64 form is fixed wherever it starts a value.
const SecretMarker = "mcsecret-"

// SecretsFileEnv names the file secrets are recorded to; see RecordSecret.
const SecretsFileEnv = "MODELCAR_SECRETS_FILE"

// LogDirEnv names a directory where the test environment keeps a copy of
// the log of every service it started (registries, toxiproxy, containerd)
// before it removes its temporary directory.
const LogDirEnv = "MODELCAR_TESTENV_LOGS"

// Forms of a recorded secret, the first field of each line of the secrets
// file ("FORM\tVALUE").
const (
	FormPlain     = "plain"      // the secret itself
	FormBase64    = "base64"     // standard base64 of the secret
	FormBasicAuth = "basic-auth" // standard base64 of "user:secret"
)

var secrets struct {
	mu   sync.Mutex
	all  []string // plain secrets, for Mask
	seen map[string]bool
}

// NewSecret returns a new secret (a password, a token) for t: SecretMarker
// followed by 32 random hex digits, recorded by RecordSecret with the
// basic-auth forms for users.
func NewSecret(t testing.TB, users ...string) string {
	t.Helper()
	s := SecretMarker + randomHex(16)
	RecordSecret(t, s, users...)
	return s
}

// SecretForms returns the forms of secret that RecordSecret records: the
// secret, its base64, and for each user the base64 of "user:secret".
func SecretForms(secret string, users ...string) [][2]string {
	forms := [][2]string{{FormPlain, secret}, {FormBase64, base64.StdEncoding.EncodeToString([]byte(secret))}}
	for _, u := range users {
		forms = append(forms, [2]string{FormBasicAuth, base64.StdEncoding.EncodeToString([]byte(u + ":" + secret))})
	}
	return forms
}

// RecordSecret records secret (a password, a token) for leak checks: Mask
// hides it from then on, and when $MODELCAR_SECRETS_FILE is set, each of
// its SecretForms is appended to that file as one "FORM\tVALUE" line. Tests
// of several packages may append at once: each record is one write to a
// file opened for appending. A failure to record fails t.
func RecordSecret(t testing.TB, secret string, users ...string) {
	t.Helper()
	if err := recordSecret(secret, users...); err != nil {
		t.Fatalf("testenv: recording a secret: %v", err)
	}
}

func recordSecret(secret string, users ...string) error {
	if secret == "" {
		return nil
	}
	var b strings.Builder
	secrets.mu.Lock()
	if secrets.seen == nil {
		secrets.seen = map[string]bool{}
	}
	for _, f := range SecretForms(secret, users...) {
		if line := f[0] + "\t" + f[1] + "\n"; !secrets.seen[line] {
			secrets.seen[line] = true
			b.WriteString(line)
		}
	}
	if !secrets.seen[secret] {
		secrets.seen[secret] = true
		secrets.all = append(secrets.all, secret)
	}
	secrets.mu.Unlock()
	return appendSecrets(b.String())
}

// appendSecrets appends lines to $MODELCAR_SECRETS_FILE, if set.
func appendSecrets(lines string) error {
	path := os.Getenv(SecretsFileEnv)
	if path == "" || lines == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, werr := io.WriteString(f, lines)
	if err := f.Close(); werr == nil {
		werr = err
	}
	return werr
}

// markerRE matches SecretMarker and what follows it up to a separator.
var markerRE = regexp.MustCompile(regexp.QuoteMeta(SecretMarker) + `[0-9A-Za-z_-]*`)

// Mask replaces every secret recorded in this process, and anything that
// starts with SecretMarker, by "***", for messages that may quote
// credentials (a failed command line with -p PASSWORD).
func Mask(s string) string {
	secrets.mu.Lock()
	all := append([]string(nil), secrets.all...)
	secrets.mu.Unlock()
	for _, v := range all {
		s = strings.ReplaceAll(s, v, "***")
	}
	return markerRE.ReplaceAllString(s, "***")
}

// keepLog copies the log file at path to $MODELCAR_TESTENV_LOGS, when set,
// as KIND-TEST-N.log, so that leak checks can read it after the temporary
// directory holding it is gone. A failure is logged, not fatal.
func keepLog(t testing.TB, kind, path string) {
	dir := os.Getenv(LogDirEnv)
	if dir == "" {
		return
	}
	src, err := os.Open(path)
	if err != nil {
		if !os.IsNotExist(err) {
			t.Logf("testenv: keeping %s: %v", path, err)
		}
		return
	}
	defer src.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("testenv: keeping %s: %v", path, err)
		return
	}
	name := kind + "-" + strings.Trim(unsafeName.ReplaceAllString(t.Name(), "_"), "_")
	if len(name) > 100 {
		name = name[:100]
	}
	dst, err := os.CreateTemp(dir, name+"-*.log")
	if err != nil {
		t.Logf("testenv: keeping %s: %v", path, err)
		return
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Logf("testenv: keeping %s as %s: %v", path, filepath.Base(dst.Name()), err)
	}
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
