package main

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/ocilayout"
	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/push"
)

// crashPoints is how many seeded kill -9 points each command is tested at.
const crashPoints = 20

// killAt runs modelcar and kills it with SIGKILL after d (or lets it end).
func killAt(t *testing.T, env []string, d time.Duration, args ...string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(d, func() { cmd.Process.Kill() })
	cmd.Wait()
	timer.Stop()
}

// timed runs modelcar to completion and returns how long it took.
func timed(t *testing.T, env []string, args ...string) time.Duration {
	t.Helper()
	start := time.Now()
	if r := runWith(t, env, "", args...); r.code != 0 {
		t.Fatalf("modelcar %s: %+v", args[0], r)
	}
	return time.Since(start)
}

// layoutConsistent fails if a layout's index.json names a manifest whose
// blobs are not all present: a layout that claims more than it holds.
func layoutConsistent(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return // nothing at the output name: fine
	}
	if !ocilayout.IsLayout(dir) {
		t.Fatalf("%s exists but is not a layout", dir)
	}
	if _, err := push.Verify(context.Background(), "oci:"+dir, "", ""); err != nil && !strings.Contains(err.Error(), "holds no image") {
		t.Fatalf("layout %s after a crash: %v", dir, err)
	}
}

// TestCrashConsistency kills pack, push, pull and mirror with SIGKILL at
// seeded random points, checks that nothing left claims to be complete
// when it is not, then re-runs each and verifies the result.
func TestCrashConsistency(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: kill -9 at many points")
	}
	rng := rand.New(rand.NewPCG(42, 7))
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: 5, TotalSize: 48 << 20, Shards: 4})
	if err != nil {
		t.Fatal(err)
	}
	reg := testenv.StartRegistry(t)
	env := []string{"XDG_CACHE_HOME=" + t.TempDir(), "DOCKER_CONFIG=" + t.TempDir()}
	base := t.TempDir()
	good := filepath.Join(base, "good")
	full := timed(t, env, "pack", m.Dir, "--no-cache", "--output", "oci:"+good+":v1")
	point := func(d time.Duration) time.Duration { return time.Duration(rng.Int64N(int64(d) + 1)) }

	t.Run("pack", func(t *testing.T) {
		for i := range crashPoints {
			out := filepath.Join(base, "pack", strings.Repeat("x", 1)+string(rune('a'+i)))
			archive := out + ".tar"
			killAt(t, env, point(full), "pack", m.Dir, "--no-cache", "--output", "oci:"+out+":v1")
			layoutConsistent(t, out)
			killAt(t, env, point(full), "pack", m.Dir, "--no-cache", "--output", "oci-archive:"+archive)
			if _, err := os.Stat(archive); err == nil {
				if _, err := push.Verify(context.Background(), "oci-archive:"+archive, "", ""); err != nil {
					t.Fatalf("archive left after a crash does not verify: %v", err)
				}
			}
			timed(t, env, "pack", m.Dir, "--output", "oci:"+out+":v1")
			if _, err := push.Verify(context.Background(), "oci:"+out+":v1", m.Dir, ""); err != nil {
				t.Fatalf("re-run pack: %v", err)
			}
			t.Logf("FAULT name=crash/pack/%02d outcome=survived bytes_lost=0", i)
		}
	})
	pushFull := timed(t, env, "push", "oci:"+good+":v1", reg.Ref("crash/probe")+":v1", "--plain-http", "--chunk-size", "4MiB")
	t.Run("push", func(t *testing.T) {
		for i := range crashPoints {
			dst := reg.Ref("crash/push" + string(rune('a'+i)))
			killAt(t, env, point(pushFull), "push", "oci:"+good+":v1", dst+":v1", "--plain-http", "--chunk-size", "4MiB")
			// A tag that exists must point at complete content.
			if _, err := push.Verify(context.Background(), dst+":v1", "", "", push.WithPlainHTTP(true)); err != nil &&
				!strings.Contains(err.Error(), "not found") && !strings.Contains(err.Error(), "unknown") {
				t.Fatalf("tag after a crashed push: %v", err)
			}
			timed(t, env, "push", "oci:"+good+":v1", dst+":v1", "--plain-http", "--chunk-size", "4MiB")
			if _, err := push.Verify(context.Background(), dst+":v1", m.Dir, "", push.WithPlainHTTP(true)); err != nil {
				t.Fatalf("re-run push: %v", err)
			}
			t.Logf("FAULT name=crash/push/%02d outcome=survived bytes_lost=0", i)
		}
	})
	pullFull := timed(t, env, "pull", reg.Ref("crash/probe")+":v1", filepath.Join(base, "pullprobe"), "--plain-http")
	t.Run("pull", func(t *testing.T) {
		for i := range crashPoints {
			dir := filepath.Join(base, "pull", string(rune('a'+i)))
			killAt(t, env, point(pullFull), "pull", reg.Ref("crash/probe")+":v1", dir, "--plain-http")
			// Any file under its final name is complete and correct.
			filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
				if err != nil || info.IsDir() || strings.HasPrefix(info.Name(), ".") {
					return nil
				}
				rel, _ := filepath.Rel(dir, p)
				src, serr := os.ReadFile(filepath.Join(m.Dir, rel))
				got, _ := os.ReadFile(p)
				if serr != nil || string(src) != string(got) {
					t.Fatalf("%s is under its final name but incomplete or wrong after a crash", rel)
				}
				return nil
			})
			timed(t, env, "pull", reg.Ref("crash/probe")+":v1", dir, "--plain-http")
			if r := runWith(t, nil, "", "verify", "oci:"+good+":v1", "--against", dir); r.code != 0 {
				t.Fatalf("re-run pull: %+v", r)
			}
			t.Logf("FAULT name=crash/pull/%02d outcome=survived bytes_lost=0", i)
		}
	})
	mirrorFull := timed(t, env, "mirror", reg.Ref("crash/probe")+":v1", "oci-archive:"+filepath.Join(base, "probe.tar"), "--plain-http")
	t.Run("mirror", func(t *testing.T) {
		for i := range crashPoints {
			archive := filepath.Join(base, "mirror", string(rune('a'+i))+".tar")
			os.MkdirAll(filepath.Dir(archive), 0o755)
			killAt(t, env, point(mirrorFull), "mirror", reg.Ref("crash/probe")+":v1", "oci-archive:"+archive, "--plain-http")
			if _, err := os.Stat(archive); err == nil {
				if _, err := push.Verify(context.Background(), "oci-archive:"+archive, "", ""); err != nil {
					t.Fatalf("archive after a crashed mirror: %v", err)
				}
			}
			timed(t, env, "mirror", reg.Ref("crash/probe")+":v1", "oci-archive:"+archive, "--plain-http")
			if _, err := push.Verify(context.Background(), "oci-archive:"+archive, m.Dir, ""); err != nil {
				t.Fatalf("re-run mirror: %v", err)
			}
			t.Logf("FAULT name=crash/mirror/%02d outcome=survived bytes_lost=0", i)
		}
	})
}
