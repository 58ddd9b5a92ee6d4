package pack

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/bmatcuk/doublestar/v4"
)

// DefaultExcludes are the patterns left out of every model unless an
// --include names them: version control, download caches, lock files and
// the stamp modelcar pull leaves in a directory it filled.
var DefaultExcludes = []string{".git/", ".cache/", ".huggingface/", "*.lock", "*.incomplete", ".modelcar-pull.json"}

// ScanOptions selects which files of a model directory are packed.
type ScanOptions struct {
	// Include, when not empty, keeps only files matching one of the patterns.
	Include []string
	// Exclude drops files matching one of the patterns, on top of
	// DefaultExcludes.
	Exclude []string
	// FollowExternalSymlinks follows symlinks whose target resolves outside
	// the model directory. By default (false) such a link fails the scan
	// with an *ExternalSymlinkError: a directory from a git clone or an
	// archive keeps its symlinks, and a link such as tokenizer.model ->
	// /etc/shadow would put that file into the image. A Hugging Face cache
	// snapshot's links into its own repository's blobs/ are followed
	// either way.
	FollowExternalSymlinks bool
}

// Validate checks the include and exclude patterns.
func (o ScanOptions) Validate() error {
	for _, p := range append(append([]string{}, o.Include...), o.Exclude...) {
		if err := checkPattern(p); err != nil {
			return err
		}
	}
	return nil
}

// ExternalSymlinkError is a symlink in the model directory whose target
// resolves outside it (and outside the Hugging Face cache blobs/ of the
// same repository, for a cache snapshot): Scan refuses it unless
// ScanOptions.FollowExternalSymlinks is set.
type ExternalSymlinkError struct {
	// Link is the link's Rel path, Target what it holds (os.Readlink),
	// Resolved the file it leads to after every link on the way, and Dir
	// the model directory (with its own symlinks resolved).
	Link, Target, Resolved, Dir string
}

func (e *ExternalSymlinkError) Error() string {
	via := ""
	if e.Resolved != e.Target {
		via = " (resolved: " + e.Resolved + ")"
	}
	return fmt.Sprintf("symlink to %s%s points outside the model directory %s: not followed (links are followed inside the model directory, and from a Hugging Face cache snapshot into its own repository's blobs/)", e.Target, via, e.Dir)
}

// Scan lists the regular files of the model directory dir, sorted by Rel.
//
// A file symlink is followed when its target resolves inside dir, or, when
// dir is a Hugging Face cache snapshot (REPO/snapshots/COMMIT, or a
// directory in one), inside REPO/blobs; any other target is an
// *ExternalSymlinkError (wrapped in an *InputError naming the link) unless
// opts.FollowExternalSymlinks. A dangling link, a loop of links, a link to
// anything but a regular file, a special file, an unreadable directory or
// an empty model is an *InputError naming the file.
func Scan(ctx context.Context, dir string, opts ScanOptions) ([]SourceFile, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("model directory %s: not a directory", dir)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	links, err := newLinkRule(dir, opts.FollowExternalSymlinks)
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	excludes := append(append([]string{}, DefaultExcludes...), opts.Exclude...)
	var files []SourceFile
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		rel, rerr := filepath.Rel(dir, p)
		if rerr != nil {
			return rerr
		}
		rel = filepath.ToSlash(rel)
		if err != nil {
			return &InputError{File: relOrDot(rel), Err: err}
		}
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			if matchAny(excludes, rel+"/") && !matchAny(opts.Include, rel+"/") {
				return filepath.SkipDir
			}
			return nil
		}
		if matchAny(excludes, rel) && !matchAny(opts.Include, rel) {
			return nil
		}
		if len(opts.Include) > 0 && !matchAny(opts.Include, rel) {
			return nil
		}
		target := p
		info, err := d.Info()
		if err != nil {
			return &InputError{File: rel, Err: err}
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			if target, info, err = links.follow(p, rel); err != nil {
				return &InputError{File: rel, Err: err}
			}
		} else if !info.Mode().IsRegular() {
			return &InputError{File: rel, Err: fmt.Errorf("%s is not a regular file", describeMode(info.Mode()))}
		}
		f := SourceFile{Rel: rel, Path: target, Size: info.Size(), Mode: info.Mode(), ModTime: info.ModTime()}
		if sys, ok := info.Sys().(*syscall.Stat_t); ok {
			f.Dev, f.Ino = uint64(sys.Dev), sys.Ino
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		var ie *InputError
		if errors.As(err, &ie) {
			return nil, err
		}
		return nil, fmt.Errorf("scanning model directory %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("model directory %s: no files to pack (after includes and excludes)", dir)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Rel < files[j].Rel })
	return files, nil
}

// linkRule decides which symlinks of one model directory Scan follows.
type linkRule struct {
	root  string   // the model directory, its own symlinks resolved
	roots []string // where a link may lead: root, and a cache snapshot's blobs/
	any   bool     // FollowExternalSymlinks
}

func newLinkRule(dir string, any bool) (*linkRule, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	if root, err = filepath.Abs(root); err != nil {
		return nil, err
	}
	r := &linkRule{root: root, roots: []string{root}, any: any}
	if blobs := hfBlobsDir(root); blobs != "" {
		r.roots = append(r.roots, blobs)
	}
	return r, nil
}

// hfBlobsDir returns the real path of REPO/blobs when dir is a Hugging Face
// cache snapshot, REPO/snapshots/COMMIT, or a directory inside one (REPO
// being models--ORG--NAME, or datasets--/spaces--), else "".
func hfBlobsDir(dir string) string {
	for d := dir; ; {
		parent := filepath.Dir(d)
		if parent == d {
			return ""
		}
		repo := filepath.Dir(parent)
		name := filepath.Base(repo)
		if filepath.Base(parent) == "snapshots" && (strings.HasPrefix(name, "models--") || strings.HasPrefix(name, "datasets--") || strings.HasPrefix(name, "spaces--")) {
			blobs, err := filepath.EvalSymlinks(filepath.Join(repo, "blobs"))
			if err != nil {
				return ""
			}
			return blobs
		}
		d = parent
	}
}

// follow resolves the symlink at p (Rel rel) to the regular file it leads
// to, or says why it may not be followed.
func (r *linkRule) follow(p, rel string) (string, fs.FileInfo, error) {
	target, err := os.Readlink(p)
	if err != nil {
		return "", nil, fmt.Errorf("reading symlink: %w", err)
	}
	resolved, err := filepath.EvalSymlinks(p)
	if err != nil {
		var pe *fs.PathError
		switch _, serr := os.Stat(p); {
		case errors.Is(serr, syscall.ELOOP) || errors.Is(err, syscall.ELOOP) || strings.Contains(err.Error(), "too many links"):
			return "", nil, fmt.Errorf("symlink to %s is a loop of symlinks (too many levels of links to reach a file)", target)
		case errors.Is(err, fs.ErrNotExist) && errors.As(err, &pe):
			return "", nil, fmt.Errorf("symlink to %s is dangling: %s does not exist", target, pe.Path)
		}
		return "", nil, fmt.Errorf("resolving symlink to %s: %w", target, err)
	}
	if resolved, err = filepath.Abs(resolved); err != nil {
		return "", nil, err
	}
	if !r.any && !r.inside(resolved) {
		return "", nil, &ExternalSymlinkError{Link: rel, Target: target, Resolved: resolved, Dir: r.root}
	}
	info, err := os.Stat(resolved)
	if err != nil {
		return "", nil, fmt.Errorf("resolving symlink to %s: %w", target, err)
	}
	if !info.Mode().IsRegular() {
		return "", nil, fmt.Errorf("symlink to %s resolves to %s, which is a %s, not a regular file", target, resolved, describeMode(info.Mode()))
	}
	return resolved, info, nil
}

// inside reports whether the resolved path p is under one of r.roots.
func (r *linkRule) inside(p string) bool {
	for _, root := range r.roots {
		rel, err := filepath.Rel(root, p)
		if err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel) {
			return true
		}
	}
	return false
}

func relOrDot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

func describeMode(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	default:
		return "special file"
	}
}

// Patterns follow .gitignore's main rules: a pattern without a slash matches
// a name at any depth, one with a slash matches the path from the model
// root, a trailing slash matches a directory and everything below it, and
// "**" matches any number of directories. The globbing is doublestar's
// (github.com/bmatcuk/doublestar/v4), less its two additions to path.Match
// (see literalGlob), so that a pattern keeps the meaning it had.
func checkPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty include/exclude pattern")
	}
	if !doublestar.ValidatePattern(literalGlob(strings.Trim(p, "/"))) {
		return fmt.Errorf("include/exclude pattern %q: %w", p, path.ErrBadPattern)
	}
	return nil
}

// literalGlob escapes what doublestar reads and path.Match does not, so
// that it stays literal: braces ({a,b} is no list of alternatives) and a
// "!" opening a class ([!a] holds "!" and "a"; [^a] negates).
func literalGlob(p string) string {
	if !strings.ContainsAny(p, "{}") && !strings.Contains(p, "[!") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\\' && i+1 < len(p):
			b.WriteString(p[i : i+2])
			i++
		case c == '{' || c == '}':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '[' && i+1 < len(p) && p[i+1] == '!':
			b.WriteString(`[\!`)
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func matchAny(patterns []string, rel string) bool {
	for _, p := range patterns {
		if matchPattern(p, rel) {
			return true
		}
	}
	return false
}

// matchPattern reports whether rel (a file, or a directory ending in "/")
// matches p.
func matchPattern(p, rel string) bool {
	dirOnly := strings.HasSuffix(p, "/")
	p = literalGlob(strings.Trim(p, "/"))
	isDir := strings.HasSuffix(rel, "/")
	rel = strings.TrimSuffix(rel, "/")
	if !strings.Contains(p, "/") {
		// Any single segment: a directory segment matches everything below it.
		segs := strings.Split(rel, "/")
		for i, s := range segs {
			last := i == len(segs)-1
			if ok, _ := doublestar.Match(p, s); ok {
				if !last || isDir || !dirOnly {
					return true
				}
			}
		}
		return false
	}
	// A pattern with a slash matches the path or one of its parent directories.
	for i := 0; i <= len(rel); i++ {
		if i < len(rel) && rel[i] != '/' {
			continue
		}
		last := i == len(rel)
		if dirOnly && last && !isDir {
			continue
		}
		if ok, _ := doublestar.Match(p, rel[:i]); ok {
			return true
		}
	}
	return false
}
