package ref

import (
	"strings"
	"testing"
)

// FuzzParse: parsing never panics, and whatever parses formats back into a
// reference that parses to the same thing.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"oci:out", "oci:./a/b:v1", "oci-archive:m.tar:v2", "oci:x@sha256:" + strings.Repeat("a", 64),
		"localhost:5000/m/l:v1", "registry.example.com/a/b@sha256:" + strings.Repeat("b", 64), "oci::", "a:b:c", "@", "oci:@sha512:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			return
		}
		r2, err := Parse(r.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, but its String %q does not parse: %v", s, r, r.String(), err)
		}
		if r2.Kind != r.Kind || r2.Path != r.Path || r2.Tag != r.Tag || (r2.Digest == nil) != (r.Digest == nil) {
			t.Fatalf("round trip of %q: %+v then %+v", s, r, r2)
		}
	})
}
