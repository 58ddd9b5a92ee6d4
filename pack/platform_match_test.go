package pack

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestPlatformMatchesArm64V8: arm64 and arm64/v8 are one platform both
// ways, as in containerd and docker; no other variant default is assumed,
// and fields the request leaves empty still match anything.
func TestPlatformMatchesArm64V8(t *testing.T) {
	p := func(s string) v1.Platform {
		pl, err := v1.ParsePlatform(s)
		if err != nil {
			t.Fatal(err)
		}
		return *pl
	}
	for _, c := range []struct {
		have, want string
		ok         bool
	}{
		{"linux/arm64", "linux/arm64/v8", true},
		{"linux/arm64/v8", "linux/arm64", true},
		{"linux/arm64/v8", "linux/arm64/v8", true},
		{"linux/arm64", "linux/arm64", true},
		{"linux/arm64/v9", "linux/arm64/v8", false},
		{"linux/arm64", "linux/arm64/v9", false},
		{"linux/arm64/v9", "linux/arm64", true}, // no variant asked: any
		{"linux/arm", "linux/arm/v7", false},    // arm has no assumed default
		{"linux/arm/v7", "linux/arm", true},
		{"linux/amd64", "linux/arm64/v8", false},
		{"windows/arm64", "linux/arm64/v8", false},
		{"linux/amd64", "linux/amd64", true},
	} {
		if got := PlatformMatches(p(c.have), p(c.want)); got != c.ok {
			t.Errorf("platformMatches(have %s, want %s) = %v, want %v", c.have, c.want, got, c.ok)
		}
	}
}
