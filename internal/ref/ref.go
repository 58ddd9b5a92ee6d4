// Package ref parses the image references modelcar accepts everywhere:
// registry references (REGISTRY/REPO[:TAG|@DIGEST]), OCI image layouts
// (oci:PATH[:TAG|@DIGEST]) and OCI archives (oci-archive:FILE[:TAG|@DIGEST]),
// following skopeo's transport names.
package ref

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Kind says where an image lives.
type Kind int

const (
	// Registry is a repository in an OCI distribution registry.
	Registry Kind = iota
	// Layout is an OCI image layout directory.
	Layout
	// Archive is a tar file holding an OCI image layout.
	Archive
)

func (k Kind) String() string {
	switch k {
	case Layout:
		return "oci"
	case Archive:
		return "oci-archive"
	default:
		return "registry"
	}
}

// Ref is a parsed image reference.
type Ref struct {
	Kind Kind
	// Path is the layout directory or archive file (Layout and Archive).
	Path string
	// Tag selects an image by its org.opencontainers.image.ref.name
	// annotation (Layout, Archive) or registry tag; empty when not given,
	// except for a registry reference, whose tag defaults to latest.
	Tag string
	// DefaultTag is set when Tag is a registry reference's default
	// (latest), not written in the reference.
	DefaultTag bool
	// Digest pins the manifest, when given.
	Digest *v1.Hash
	// Name is the registry reference (Registry only).
	Name name.Reference
}

// tagRE is the OCI distribution tag grammar, also used for layout ref names.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// ErrNotRegistry is wrapped by the error Parse returns for a string that is
// neither oci:, oci-archive: nor REGISTRY/REPO with a registry host: a path,
// or a Docker Hub short name (which modelcar does not default).
var ErrNotRegistry = errors.New("not a registry reference (REGISTRY/REPO[:TAG|@DIGEST])")

// Parse parses s. A registry reference must start with a registry host: a
// first path component that holds a "." or a ":" or is "localhost" (the
// test docker and containerd apply), so "models/qwen:v1", "qwen:v1" and
// "./out" are refused here rather than defaulted to Docker Hub or sent to
// a host named "models" or ".". opts are passed to name.ParseReference.
func Parse(s string, opts ...name.Option) (Ref, error) {
	switch {
	case strings.HasPrefix(s, "oci:"):
		return parseLocal(Layout, s, strings.TrimPrefix(s, "oci:"))
	case strings.HasPrefix(s, "oci-archive:"):
		return parseLocal(Archive, s, strings.TrimPrefix(s, "oci-archive:"))
	case s == "":
		return Ref{}, fmt.Errorf("empty image reference")
	}
	if strings.Contains(s, "://") {
		return Ref{}, fmt.Errorf("parsing reference %q: use REGISTRY/REPO[:TAG|@DIGEST] without a URL scheme", s)
	}
	if err := checkRegistryHost(s); err != nil {
		return Ref{}, err
	}
	n, err := name.ParseReference(s, opts...)
	if err != nil {
		return Ref{}, fmt.Errorf("parsing reference %q: %w", s, err)
	}
	r := Ref{Kind: Registry, Name: n}
	switch v := n.(type) {
	case name.Digest:
		h, err := v1.NewHash(v.DigestStr())
		if err != nil {
			return Ref{}, fmt.Errorf("parsing reference %q: %w", s, err)
		}
		r.Digest = &h
	case name.Tag:
		r.Tag = v.TagStr()
		r.DefaultTag = !strings.Contains(s[strings.LastIndex(s, "/")+1:], ":")
	}
	return r, nil
}

// checkRegistryHost refuses s unless its first path component is a
// plausible registry host, naming the oci: and oci-archive: spellings the
// user may have meant (a trailing :TAG or @DIGEST stays the tag or digest of
// the archive FILE.tar).
func checkRegistryHost(s string) error {
	host, _, ok := strings.Cut(s, "/")
	plausible := ok && host != "." && host != ".." && host != "" &&
		(host == "localhost" || strings.ContainsAny(host, ".:")) &&
		!strings.HasPrefix(s, "./") && !strings.HasPrefix(s, "../") && !strings.HasPrefix(s, "/")
	if plausible {
		return nil
	}
	file, tag := s, ""
	if i := strings.LastIndex(s, "@"); i > 0 {
		file, tag = s[:i], s[i:]
	} else if i := strings.LastIndex(s, ":"); i > 0 && !strings.Contains(s[i+1:], "/") && tagRE.MatchString(s[i+1:]) {
		file, tag = s[:i], s[i:]
	}
	if !strings.HasSuffix(file, ".tar") {
		file += ".tar"
	}
	return fmt.Errorf("%s: %w; for a local layout write oci:%s, for an archive oci-archive:%s%s", s, ErrNotRegistry, s, file, tag)
}

func parseLocal(k Kind, orig, rest string) (Ref, error) {
	r := Ref{Kind: k}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		h, err := v1.NewHash(rest[i+1:])
		if err != nil {
			return Ref{}, fmt.Errorf("parsing reference %q: digest %q: %w", orig, rest[i+1:], err)
		}
		r.Digest = &h
		rest = rest[:i]
	} else if i := strings.LastIndex(rest, ":"); i >= 0 && !strings.Contains(rest[i+1:], "/") {
		tag := rest[i+1:]
		if !tagRE.MatchString(tag) {
			return Ref{}, fmt.Errorf("parsing reference %q: invalid tag %q", orig, tag)
		}
		r.Tag = tag
		rest = rest[:i]
	}
	if rest == "" {
		return Ref{}, fmt.Errorf("parsing reference %q: missing path", orig)
	}
	r.Path = rest
	return r, nil
}

// ValidTag reports whether t is a valid tag or layout ref name.
func ValidTag(t string) bool { return tagRE.MatchString(t) }

// String formats r back into the syntax Parse accepts.
func (r Ref) String() string {
	if r.Kind == Registry {
		if r.Name == nil {
			return ""
		}
		return r.Name.String()
	}
	s := r.Kind.String() + ":" + r.Path
	switch {
	case r.Digest != nil:
		s += "@" + r.Digest.String()
	case r.Tag != "":
		s += ":" + r.Tag
	}
	return s
}

// base is r without its tag or digest: REGISTRY/REPO, oci:PATH or
// oci-archive:FILE.
func (r Ref) base() string {
	if r.Kind == Registry {
		if r.Name == nil {
			return ""
		}
		return r.Name.Context().Name()
	}
	return r.Kind.String() + ":" + r.Path
}

// Pinned is the reference to the manifest dg in r's repository, layout or
// archive: REGISTRY/REPO@sha256:..., oci:PATH@sha256:... or
// oci-archive:FILE@sha256:..., what commands print when they wrote or
// checked an image.
func (r Ref) Pinned(dg string) string { return r.base() + "@" + dg }

// Tagged is the reference to tag in r's repository, layout or archive; ""
// when tag is.
func (r Ref) Tagged(tag string) string {
	if tag == "" {
		return ""
	}
	return r.base() + ":" + tag
}
