package push

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestCheckPlatform(t *testing.T) {
	for _, c := range []struct {
		p  v1.Platform
		ok bool
	}{
		{v1.Platform{}, true},
		{v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, true},
		{v1.Platform{OS: "linux"}, false},
		{v1.Platform{Architecture: "arm64"}, false},
		{v1.Platform{Variant: "v8"}, false},
	} {
		if err := checkPlatform(c.p); (err == nil) != c.ok {
			t.Errorf("checkPlatform(%+v) = %v", c.p, err)
		}
	}
}

func TestLabeledOnce(t *testing.T) {
	inner := errNotFoundForTest("reg.example/models/qwen:nope: not found")
	err := labeled("reg.example/models/qwen:nope", []string{"reg.example/models/qwen:nope"}, inner)
	if got := err.Error(); got != "reg.example/models/qwen:nope: not found" {
		t.Errorf("got %q", got)
	}
	if err.(*labeledError).Unwrap() != inner {
		t.Errorf("the cause is lost")
	}
}

type errNotFoundForTest string

func (e errNotFoundForTest) Error() string { return string(e) }
