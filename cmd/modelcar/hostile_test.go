package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Hostile inputs to the CLI (issue 18): each logs a FAULT line in the
// hostile suite, which `make test-faults` counts. "failed-clearly" means
// refused with an error that names the input and what is wrong with it,
// nothing written.

// TestHostilePackSymlinkOutside: a model directory (as a git clone keeps
// it) whose tokenizer.model links to a file outside it. pack refuses,
// naming the link and its target and the flag that follows it anyway, and
// writes nothing; with --follow-external-symlinks it packs the file.
func TestHostilePackSymlinkOutside(t *testing.T) {
	for _, tc := range []struct{ name, target string }{
		{"absolute", "%s/shadow"},
		{"relative", "../secrets/shadow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := genModel(t)
			secrets := filepath.Join(filepath.Dir(m.Dir), "secrets")
			os.MkdirAll(secrets, 0o755)
			if err := os.WriteFile(filepath.Join(secrets, "shadow"), []byte("root:$6$hash:19000::::::\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			target := strings.ReplaceAll(tc.target, "%s", secrets)
			if err := os.Symlink(target, filepath.Join(m.Dir, "tokenizer.model")); err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			r := run(t, nil, "pack", m.Dir, "--output", "oci:"+parent+"/out", "-q")
			if r.code != 1 || r.stdout != "" {
				t.Fatalf("pack of a link outside the model: %+v", r)
			}
			for _, want := range []string{"tokenizer.model: symlink to " + target, "outside the model directory", "--follow-external-symlinks"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("refused pack left %d entries", len(ents))
			}
			t.Logf("FAULT name=hostile/pack-symlink-outside-%s/pack outcome=failed-clearly bytes_lost=0", tc.name)
			r = run(t, nil, "pack", m.Dir, "--output", "oci:"+parent+"/out", "-q", "--follow-external-symlinks", "--json")
			if r.code != 0 || !strings.Contains(r.stdout, `"tokenizer.model"`) {
				t.Errorf("pack --follow-external-symlinks: %+v", r)
			}
		})
	}
}
