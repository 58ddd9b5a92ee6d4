package ref

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in         string
		kind       Kind
		path, tag  string
		digest     bool
		defaultTag bool // the registry tag latest is implied, not written
		wantErr    string
		roundtrips bool
	}{
		{in: "oci:out", kind: Layout, path: "out", roundtrips: true},
		{in: "oci:./a/b:v1", kind: Layout, path: "./a/b", tag: "v1", roundtrips: true},
		{in: "oci:/x/y.dir:latest", kind: Layout, path: "/x/y.dir", tag: "latest", roundtrips: true},
		{in: "oci:a:b/c", kind: Layout, path: "a:b/c"},
		{in: "oci-archive:m.tar:v2", kind: Archive, path: "m.tar", tag: "v2", roundtrips: true},
		{in: "oci:out@sha256:" + strings.Repeat("a", 64), kind: Layout, path: "out", digest: true, roundtrips: true},
		{in: "oci:out@sha256:abc", wantErr: "digest"},
		{in: "oci:", wantErr: "missing path"},
		{in: "oci::tag", wantErr: "missing path"},
		{in: "oci:out:bad tag!", wantErr: "invalid tag"},
		{in: "localhost:5000/models/llama:v1", kind: Registry, tag: "v1"},
		{in: "localhost:5000/models/llama@sha256:" + strings.Repeat("b", 64), kind: Registry, digest: true},
		{in: "https://example.com/x", wantErr: "URL scheme"},
		{in: "", wantErr: "empty"},
		{in: "registry.example.com/UPPER", wantErr: "parsing reference"},
		{in: "UPPER/case", wantErr: "not a registry reference"},
		{in: "registry.example.com/models/qwen:v1", kind: Registry, tag: "v1"},
		{in: "localhost/qwen", kind: Registry, tag: "latest", defaultTag: true},
		{in: "localhost:5000/qwen:latest", kind: Registry, tag: "latest"},
		{in: "127.0.0.1:5000/a/b:v1", kind: Registry, tag: "v1"},
		{in: "[::1]:5000/a/b", kind: Registry, tag: "latest", defaultTag: true},
	} {
		r, err := Parse(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse(%q) error = %v, want containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if r.Kind != tc.kind || r.Path != tc.path || r.Tag != tc.tag || (r.Digest != nil) != tc.digest || r.DefaultTag != tc.defaultTag {
			t.Errorf("Parse(%q) = %+v", tc.in, r)
		}
		if tc.roundtrips && r.String() != tc.in {
			t.Errorf("Parse(%q).String() = %q", tc.in, r.String())
		}
	}
}

// TestParseRefusesHostlessReferences: a string whose first path component is
// not a registry host (a path, or a Docker Hub short name) fails at parse
// time, before anything resolves it, with one message naming the oci: and
// oci-archive: spellings.
func TestParseRefusesHostlessReferences(t *testing.T) {
	for in, want := range map[string]string{
		"./out":          "./out: not a registry reference (REGISTRY/REPO[:TAG|@DIGEST]); for a local layout write oci:./out, for an archive oci-archive:./out.tar",
		"qwen:v1":        "qwen:v1: not a registry reference (REGISTRY/REPO[:TAG|@DIGEST]); for a local layout write oci:qwen:v1, for an archive oci-archive:qwen.tar:v1",
		"models/qwen:v1": "models/qwen:v1: not a registry reference (REGISTRY/REPO[:TAG|@DIGEST]); for a local layout write oci:models/qwen:v1, for an archive oci-archive:models/qwen.tar:v1",
		"m.tar@sha256:" + strings.Repeat("c", 64): "for an archive oci-archive:m.tar@sha256:" + strings.Repeat("c", 64),
		".":                    "not a registry reference",
		"..":                   "not a registry reference",
		"./a.b/c":              "not a registry reference",
		"../x.y/z":             "not a registry reference",
		"/srv/out":             "not a registry reference",
		"./localhost/x":        "not a registry reference",
		"../out:v1":            "oci-archive:../out.tar:v1",
		"out":                  "oci-archive:out.tar",
		"localhost":            "not a registry reference",
		"registry.example.com": "not a registry reference",
		"./":                   "not a registry reference",
		"../":                  "not a registry reference",
		"/":                    "not a registry reference",
		"./x.tar":              "oci-archive:./x.tar,",
	} {
		_, err := Parse(in)
		if err == nil || !strings.Contains(err.Error()+",", want) || !errors.Is(err, ErrNotRegistry) {
			t.Errorf("Parse(%q) error = %v, want ErrNotRegistry and containing %q", in, err, want)
		}
	}
}
