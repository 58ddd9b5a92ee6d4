package testmodel

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
)

// WriteHFCache lays m out as the Hugging Face hub cache does under cache:
// each file as a blob named by its SHA-256 in models--ORG--NAME/blobs, a
// snapshot directory for commit whose files are relative symlinks into the
// blobs, and a refs/NAME file naming commit for each of refs. It returns
// the snapshot directory.
func (m *Model) WriteHFCache(cache, repo, commit string, refs ...string) (string, error) {
	repoDir := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	snap := filepath.Join(repoDir, "snapshots", commit)
	for _, d := range []string{filepath.Join(repoDir, "blobs"), filepath.Join(repoDir, "refs"), snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	for _, f := range m.Files {
		b, err := os.ReadFile(filepath.Join(m.Dir, filepath.FromSlash(f)))
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(b)
		blob := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(repoDir, "blobs", blob), b, 0o644); err != nil {
			return "", err
		}
		link := filepath.Join(snap, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return "", err
		}
		up, _ := filepath.Rel(filepath.Dir(link), repoDir)
		if err := os.Symlink(filepath.Join(up, "blobs", blob), link); err != nil {
			return "", err
		}
	}
	for _, r := range refs {
		if err := os.WriteFile(filepath.Join(repoDir, "refs", r), []byte(commit), 0o644); err != nil {
			return "", err
		}
	}
	return snap, nil
}
