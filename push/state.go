package push

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// uploadState remembers open upload sessions, one small file each, so a
// push that was killed continues each partial blob where the registry left
// it. Upload URLs carry no credentials (registries sign their own state
// into them); files are private to the user anyway.
type uploadState struct {
	dir string
}

type savedUpload struct {
	Registry string `json:"registry"`
	Repo     string `json:"repository"`
	Digest   string `json:"digest"`
	Location string `json:"location"`
}

func newUploadState(dir string) *uploadState {
	if dir == "" {
		return nil
	}
	return &uploadState{dir: dir}
}

func (s *uploadState) file(registry, repo, dg string) string {
	sum := sha256.Sum256([]byte(registry + "/" + repo + "@" + dg))
	return filepath.Join(s.dir, hex.EncodeToString(sum[:16])+".json")
}

func (s *uploadState) load(registry, repo, dg string) (savedUpload, bool) {
	var u savedUpload
	if s == nil {
		return u, false
	}
	b, err := os.ReadFile(s.file(registry, repo, dg))
	if err != nil || json.Unmarshal(b, &u) != nil || u.Location == "" || u.Digest != dg {
		return u, false
	}
	return u, true
}

// save records a session; failing to save only loses cross-run resume.
func (s *uploadState) save(u savedUpload) {
	if s == nil {
		return
	}
	if os.MkdirAll(s.dir, 0o700) != nil {
		return
	}
	b, _ := json.Marshal(u)
	// Written with renameio (a temporary file beside it, fsynced, renamed
	// over it); a failed write only costs the entry.
	_ = renameio.WriteFile(s.file(u.Registry, u.Repo, u.Digest), b, 0o600, renameio.WithTempDir(s.dir))
}

func (s *uploadState) drop(registry, repo, dg string) {
	if s != nil {
		os.Remove(s.file(registry, repo, dg))
	}
}
