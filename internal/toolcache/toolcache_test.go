package toolcache

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestRequiredVersion(t *testing.T) {
	gomod := filepath.Join(t.TempDir(), "go.mod")
	content := `module example.com/tools

go 1.26

tool oras.land/oras/cmd/oras

require example.com/single v1.0.0 // indirect

require (
	github.com/google/go-containerregistry v0.22.1 // indirect
	oras.land/oras v1.3.6
)
`
	if err := os.WriteFile(gomod, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	for module, want := range map[string]string{
		"github.com/google/go-containerregistry": "v0.22.1",
		"oras.land/oras":                         "v1.3.6",
		"example.com/single":                     "v1.0.0",
	} {
		got, err := RequiredVersion(gomod, module)
		if err != nil || got != want {
			t.Errorf("RequiredVersion(%s) = %q, %v; want %q", module, got, err, want)
		}
	}
	if _, err := RequiredVersion(gomod, "oras.land/oras-go/v2"); err == nil {
		t.Errorf("RequiredVersion of an absent module succeeded")
	}
}

func TestDirAndPath(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(DirEnv, dir)
	if got, err := Dir(); err != nil || got != dir {
		t.Errorf("Dir() = %q, %v; want %q", got, err, dir)
	}
	if got, err := Path("crane", "v0.22.1"); err != nil || got != filepath.Join(dir, "crane-v0.22.1") {
		t.Errorf("Path = %q, %v; want %s/crane-v0.22.1", got, err, dir)
	}

	t.Setenv(DirEnv, "")
	t.Setenv("HOME", "/home/someone")
	if got, err := Dir(); err != nil || got != "/home/someone/.cache/modelcar-testenv/tools" {
		t.Errorf("Dir() without %s = %q, %v", DirEnv, got, err)
	}
}

func TestInstall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "tool-v1.0.0")
	var builds atomic.Int32
	build := func(tmp string) error {
		builds.Add(1)
		if !strings.HasPrefix(tmp, path+".tmp-") {
			t.Errorf("build into %s, want %s.tmp-PID", tmp, path)
		}
		return os.WriteFile(tmp, []byte("#!/bin/sh\n"), 0o755)
	}
	var wg sync.WaitGroup
	var built atomic.Int32
	for range 4 {
		wg.Go(func() {
			b, err := Install(path, build)
			if err != nil {
				t.Error(err)
			}
			if b {
				built.Add(1)
			}
		})
	}
	wg.Wait()
	if builds.Load() != 1 || built.Load() != 1 {
		t.Errorf("%d builds, %d calls reporting built; want 1 and 1", builds.Load(), built.Load())
	}
	if !IsExecutable(path) {
		t.Errorf("%s is not executable after Install", path)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"tool-v1.0.0", "tool-v1.0.0.lock"}; !slices.Equal(names, want) {
		t.Errorf("cache holds %v, want %v (no temporary left)", names, want)
	}

	// A failed build installs nothing and leaves no temporary.
	failed := filepath.Join(filepath.Dir(path), "broken-v1")
	boom := errors.New("boom")
	if b, err := Install(failed, func(tmp string) error {
		os.WriteFile(tmp, []byte("half"), 0o755)
		return boom
	}); b || !errors.Is(err, boom) {
		t.Errorf("Install with a failing build = %v, %v; want false, boom", b, err)
	}
	if _, err := os.Stat(failed); !os.IsNotExist(err) {
		t.Errorf("failed build left %s: %v", failed, err)
	}
	if m, _ := filepath.Glob(failed + ".tmp-*"); len(m) > 0 {
		t.Errorf("failed build left %v", m)
	}
}

func TestBuildEnv(t *testing.T) {
	t.Setenv("GOOS", "windows")
	t.Setenv("CGO_ENABLED", "1")
	t.Setenv("GOWORK", "/x/go.work")
	t.Setenv("GOFLAGS", "-mod=vendor -modfile=x.mod -tags=foo")
	env := BuildEnv()
	for _, kv := range env {
		if strings.HasPrefix(kv, "GOOS=") {
			t.Errorf("BuildEnv keeps %s", kv)
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=mod -tags=foo"} {
		if !slices.Contains(env, want) {
			t.Errorf("BuildEnv lacks %s: %v", want, env)
		}
	}
	for _, k := range []string{"CGO_ENABLED=", "GOWORK=", "GOFLAGS="} {
		n := 0
		for _, kv := range env {
			if strings.HasPrefix(kv, k) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("BuildEnv has %d %s entries", n, k)
		}
	}
}
