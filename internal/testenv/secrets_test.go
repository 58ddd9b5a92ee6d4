package testenv

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestNewSecretIsRecordedAndMasked: a new secret is the marker and 32 hex
// digits; it is recorded, with its base64 and basic-auth forms, to the
// file $MODELCAR_SECRETS_FILE names, once; Mask hides it, and any other
// marked value, in messages. (The secrets are never logged here.)
func TestNewSecretIsRecordedAndMasked(t *testing.T) {
	file := filepath.Join(t.TempDir(), "secrets.txt")
	t.Setenv(SecretsFileEnv, file)
	s := NewSecret(t, "ci-bot", "other")
	if !regexp.MustCompile(`^` + regexp.QuoteMeta(SecretMarker) + `[0-9a-f]{32}$`).MatchString(s) {
		t.Errorf("the secret is not the marker and 32 hex digits (%d bytes)", len(s))
	}
	if NewSecret(t) == s {
		t.Error("two secrets are equal")
	}
	RecordSecret(t, s, "ci-bot") // again: nothing new to record
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	want := []string{
		FormPlain + "\t" + s,
		FormBase64 + "\t" + base64.StdEncoding.EncodeToString([]byte(s)),
		FormBasicAuth + "\t" + base64.StdEncoding.EncodeToString([]byte("ci-bot:"+s)),
		FormBasicAuth + "\t" + base64.StdEncoding.EncodeToString([]byte("other:"+s)),
	}
	if len(lines) != len(want)+2 { // the second secret's plain and base64
		t.Errorf("%d lines recorded, want %d", len(lines), len(want)+2)
	}
	for i, w := range want {
		if i >= len(lines) || lines[i] != w {
			t.Errorf("line %d is not the %s form", i+1, strings.SplitN(w, "\t", 2)[0])
		}
	}
	masked := Mask("login -u ci-bot -p " + s + " and " + SecretMarker + "deadbeef, done")
	if masked != "login -u ci-bot -p *** and ***, done" {
		t.Errorf("Mask left a secret: %d bytes, want the secrets as ***", len(masked))
	}
	if strings.Contains(quoteArgs("crane", []string{"auth", "login", "-p", s}), s) {
		t.Error("quoteArgs shows a secret")
	}
}

// TestRecordSecretWithoutFile: without $MODELCAR_SECRETS_FILE nothing is
// written, and Mask still hides the secret.
func TestRecordSecretWithoutFile(t *testing.T) {
	t.Setenv(SecretsFileEnv, "")
	dir := t.TempDir()
	t.Chdir(dir)
	RecordSecret(t, "plain-password-1234", "u")
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("%d files written", len(entries))
	}
	if Mask("pw plain-password-1234") != "pw ***" {
		t.Error("Mask left a recorded secret")
	}
}

// TestKeepLog: with $MODELCAR_TESTENV_LOGS set, a service's log is copied
// there under its kind and the test's name; without it, nothing is.
func TestKeepLog(t *testing.T) {
	src := filepath.Join(t.TempDir(), "registry.log")
	if err := os.WriteFile(src, []byte("level=info msg=hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(t.TempDir(), "logs")
	t.Setenv(LogDirEnv, keep)
	keepLog(t, "registry", src)
	kept, _ := filepath.Glob(filepath.Join(keep, "registry-TestKeepLog-*.log"))
	if len(kept) != 1 {
		t.Fatalf("kept %q, want one registry-TestKeepLog-*.log", kept)
	}
	if b, _ := os.ReadFile(kept[0]); string(b) != "level=info msg=hello\n" {
		t.Errorf("kept %q", b)
	}
	t.Setenv(LogDirEnv, "")
	keepLog(t, "registry", src)
	if again, _ := filepath.Glob(filepath.Join(keep, "*")); len(again) != 1 {
		t.Errorf("kept %d files without %s", len(again), LogDirEnv)
	}
}
