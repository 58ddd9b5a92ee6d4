package ref

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in         string
		kind       Kind
		path, tag  string
		digest     bool
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
		{in: "UPPER/case", wantErr: "parsing reference"},
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
		if r.Kind != tc.kind || r.Path != tc.path || r.Tag != tc.tag || (r.Digest != nil) != tc.digest {
			t.Errorf("Parse(%q) = %+v", tc.in, r)
		}
		if tc.roundtrips && r.String() != tc.in {
			t.Errorf("Parse(%q).String() = %q", tc.in, r.String())
		}
	}
}
