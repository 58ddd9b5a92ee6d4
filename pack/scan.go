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
}

// Scan lists the regular files of the model directory dir, sorted by Rel.
// File symlinks are followed (a Hugging Face cache snapshot links every file
// into ../../blobs); a link that resolves to anything but a regular file is
// an error naming the link, as is a special file, an unreadable directory or
// an empty model.
func Scan(ctx context.Context, dir string, opts ScanOptions) ([]SourceFile, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("model directory %s: not a directory", dir)
	}
	for _, p := range append(append([]string{}, opts.Include...), opts.Exclude...) {
		if err := checkPattern(p); err != nil {
			return nil, err
		}
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
			resolved, err := filepath.EvalSymlinks(p)
			if err != nil {
				return &InputError{File: rel, Err: fmt.Errorf("resolving symlink: %w", err)}
			}
			if info, err = os.Stat(resolved); err != nil {
				return &InputError{File: rel, Err: fmt.Errorf("resolving symlink: %w", err)}
			}
			if !info.Mode().IsRegular() {
				return &InputError{File: rel, Err: fmt.Errorf("symlink resolves to %s, which is a %s, not a regular file", resolved, describeMode(info.Mode()))}
			}
			target = resolved
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
// "**" matches any number of directories.
func checkPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty include/exclude pattern")
	}
	for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
		if part == "**" {
			continue
		}
		if _, err := path.Match(part, ""); err != nil {
			return fmt.Errorf("include/exclude pattern %q: %w", p, err)
		}
	}
	return nil
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
	p = strings.Trim(p, "/")
	isDir := strings.HasSuffix(rel, "/")
	rel = strings.TrimSuffix(rel, "/")
	segs := strings.Split(rel, "/")
	if !strings.Contains(p, "/") {
		// Any single segment: a directory segment matches everything below it.
		for i, s := range segs {
			last := i == len(segs)-1
			if ok, _ := path.Match(p, s); ok {
				if !last || isDir || !dirOnly {
					return true
				}
			}
		}
		return false
	}
	pp := strings.Split(p, "/")
	// A pattern with a slash matches the path or one of its parent directories.
	for n := 1; n <= len(segs); n++ {
		last := n == len(segs)
		if dirOnly && last && !isDir {
			continue
		}
		if matchSegs(pp, segs[:n]) {
			return true
		}
	}
	return false
}

func matchSegs(p, s []string) bool {
	if len(p) == 0 {
		return len(s) == 0
	}
	if p[0] == "**" {
		for i := 0; i <= len(s); i++ {
			if matchSegs(p[1:], s[i:]) {
				return true
			}
		}
		return false
	}
	if len(s) == 0 {
		return false
	}
	if ok, _ := path.Match(p[0], s[0]); !ok {
		return false
	}
	return matchSegs(p[1:], s[1:])
}
