package pack

import (
	"strings"
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

func TestParsePlatformNormalizes(t *testing.T) {
	for in, want := range map[string]string{
		"linux/amd64": "linux/amd64", "LINUX/AMD64": "linux/amd64", "linux/x86_64": "linux/amd64", "linux/x86-64": "linux/amd64",
		"linux/aarch64": "linux/arm64", "Linux/ARM64/V8": "linux/arm64", "linux/arm64/v8": "linux/arm64", "linux/arm64/v9": "linux/arm64/v9",
		"linux/arm/7": "linux/arm/v7", "linux/i386": "linux/386", "windows/amd64": "windows/amd64",
	} {
		got, err := ParsePlatform(in)
		if err != nil || got.String() != want {
			t.Errorf("ParsePlatform(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"linux/amd64:10.0": "want OS/ARCH", "linux": "want OS/ARCH", "linux//v7": "want OS/ARCH", "linux/a b": "want OS/ARCH",
		"foo/amd64": `unknown OS "foo"`, "linux/x86_65": `unknown architecture "x86_65"`,
	} {
		if _, err := ParsePlatform(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParsePlatform(%s): %v, want an error with %q", in, err, want)
		}
	}
	pls, err := ParsePlatforms("linux/x86_64, linux/aarch64")
	if err != nil || len(pls) != 2 || pls[0].String() != "linux/amd64" || pls[1].String() != "linux/arm64" {
		t.Errorf("ParsePlatforms: %v, %v", pls, err)
	}
	if _, err := ParsePlatforms("linux/amd64,linux/x86_64"); err == nil || !strings.Contains(err.Error(), "named twice") {
		t.Errorf("the same platform by two names: %v", err)
	}
}
