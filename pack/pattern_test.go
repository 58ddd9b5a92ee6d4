package pack

import "testing"

// TestPatternsKeepTheirMeaning: the gitignore-style rules over doublestar,
// and what doublestar would read differently from path.Match kept literal
// (braces, a class opened by "!").
func TestPatternsKeepTheirMeaning(t *testing.T) {
	for _, c := range []struct {
		pattern, rel string
		want         bool
	}{
		{"*.bin", "sub/model.bin", true},
		{"original/", "original/x.bin", true},
		{"original/", "original", false},
		{"a/**/c", "a/c", true},
		{"a/**/c", "a/x/y/c", true},
		{"**/b", "b", true},
		{"a/**", "a/x/y", true},
		{"a/*/c", "a/x/y/c", false},
		{"/a/b", "a/b/c", true},
		{"{a,b}", "a", false},
		{"{a,b}", "{a,b}", true},
		{"{a,b}/c", "{a,b}/c", true},
		{"[!a]x", "!x", true},
		{"[!a]x", "bx", false},
		{"[^a]x", "bx", true},
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
	} {
		if got := matchPattern(c.pattern, c.rel); got != c.want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v", c.pattern, c.rel, got, c.want)
		}
	}
	for _, bad := range []string{"[", "a/[b", "[]", `a\`} {
		if err := checkPattern(bad); err == nil {
			t.Errorf("checkPattern(%q) accepted", bad)
		}
	}
}
