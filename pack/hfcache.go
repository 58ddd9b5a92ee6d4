package pack

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
)

// HFModel is a model named hf:ORG/NAME[@REVISION] and found in the local
// Hugging Face cache (what `hf download` / `huggingface-cli download`
// fill): pack reads the snapshot directory, never the network.
type HFModel struct {
	// Repo is ORG/NAME.
	Repo string
	// Revision is what was asked for (a branch, a tag or a commit; default
	// main) and Commit the commit it names in the cache.
	Revision, Commit string
	// Dir is the snapshot directory: CACHE/models--ORG--NAME/snapshots/COMMIT.
	Dir string
}

// HFPrefix marks a model named by Hugging Face repository id.
const HFPrefix = "hf:"

var (
	hfRepoRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$`)
	hfCommitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// HFCacheDir is the Hugging Face hub cache, as huggingface_hub finds it:
// $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
// else ~/.cache/huggingface/hub.
func HFCacheDir() (string, error) {
	if d := os.Getenv("HF_HUB_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("HF_HOME"); d != "" {
		return filepath.Join(d, "hub"), nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "huggingface", "hub"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("finding the Hugging Face cache: %w (set HF_HUB_CACHE)", err)
	}
	return filepath.Join(home, ".cache", "huggingface", "hub"), nil
}

// CheckHFSpec checks the syntax of hf:ORG/NAME[@REVISION] without looking
// at the cache.
func CheckHFSpec(s string) error {
	_, _, err := parseHF(s)
	return err
}

// parseHF splits hf:ORG/NAME[@REVISION]; REVISION defaults to main and is
// a ref name (slash-separated segments, none empty, "." or "..") or a
// commit.
func parseHF(s string) (repo, rev string, err error) {
	bad := fmt.Errorf("%s: want hf:ORG/NAME[@REVISION], such as hf:Qwen/Qwen2.5-7B-Instruct@main", s)
	spec, ok := strings.CutPrefix(s, HFPrefix)
	if !ok {
		return "", "", bad
	}
	repo, rev, hasRev := strings.Cut(spec, "@")
	if !hfRepoRE.MatchString(repo) {
		return "", "", bad
	}
	if !hasRev {
		return repo, "main", nil
	}
	if strings.ContainsAny(rev, "\\ \t") {
		return "", "", bad
	}
	for _, seg := range strings.Split(rev, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", "", bad
		}
	}
	return repo, rev, nil
}

// ResolveHF finds hf:ORG/NAME[@REVISION] in the Hugging Face cache at
// cache: a branch or tag through refs/REVISION, a commit directly. The
// error says what the cache holds when the model or revision is missing.
func ResolveHF(s, cache string) (*HFModel, error) {
	repo, rev, err := parseHF(s)
	if err != nil {
		return nil, err
	}
	m := &HFModel{Repo: repo, Revision: rev}
	repoDir := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
	if _, err := os.Stat(filepath.Join(repoDir, "snapshots")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: not in the Hugging Face cache %s (download it first: hf download %s; or set HF_HUB_CACHE)", s, cache, repo)
		}
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	if hfCommitRE.MatchString(rev) {
		m.Commit = rev
	} else {
		b, err := readHFRef(filepath.Join(repoDir, "refs", filepath.FromSlash(rev)))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.EISDIR) {
			return nil, fmt.Errorf("%s: revision %q is not in the cache (has: %s)", s, rev, hfCached(repoDir))
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
		m.Commit = strings.TrimSpace(string(b))
		if !hfCommitRE.MatchString(m.Commit) {
			return nil, fmt.Errorf("%s: %s does not hold a commit hash", s, filepath.Join(repoDir, "refs", rev))
		}
	}
	m.Dir = filepath.Join(repoDir, "snapshots", m.Commit)
	if st, err := os.Stat(m.Dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%s: commit %s has no snapshot in the cache (has: %s)", s, m.Commit, hfCached(repoDir))
	}
	return m, nil
}

// maxHFRefSize is the most of a refs/ file ResolveHF reads: it holds a
// 40-digit commit hash.
const maxHFRefSize = 1 << 10

// readHFRef reads a refs/ file: a regular file (opened without blocking on
// a FIFO) of at most maxHFRefSize bytes. A directory is syscall.EISDIR.
func readHFRef(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, syscall.EISDIR
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %s, not a file holding a commit hash", p, describeMode(st.Mode()))
	}
	b, err := io.ReadAll(io.LimitReader(f, maxHFRefSize+1))
	if err == nil && len(b) > maxHFRefSize {
		err = fmt.Errorf("%s is over %d bytes, not a file holding a commit hash", p, maxHFRefSize)
	}
	return b, err
}

// hfCached lists the refs and snapshot commits of a cached repository.
func hfCached(repoDir string) string {
	var have []string
	filepath.WalkDir(filepath.Join(repoDir, "refs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(filepath.Join(repoDir, "refs"), p)
			have = append(have, "ref "+filepath.ToSlash(rel))
		}
		return nil
	})
	if ents, err := os.ReadDir(filepath.Join(repoDir, "snapshots")); err == nil {
		for _, e := range ents {
			have = append(have, "commit "+e.Name())
		}
	}
	if len(have) == 0 {
		return "nothing"
	}
	sort.Strings(have)
	return strings.Join(have, ", ")
}

// Annotations are the manifest annotations that record where the model
// came from: the repository's page and the commit.
func (m *HFModel) Annotations() map[string]string {
	return map[string]string{
		"org.opencontainers.image.source":   "https://huggingface.co/" + m.Repo,
		"org.opencontainers.image.revision": m.Commit,
	}
}
