package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// TestPushResumesAfterKill9: a push is killed with SIGKILL while one blob
// is half uploaded (the next chunk held in a proxy). Re-running it sends no
// byte of the blobs that were finished and only the missing part of the
// partial blob, counted by the proxy in front of a real registry.
func TestPushResumesAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry, proxy, kill -9")
	}
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartProxy(t, reg.Addr)
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: 9, TotalSize: 24 << 20, Shards: 3})
	if err != nil {
		t.Fatal(err)
	}
	res, err := push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "oci")+":v1", []pack.Option{pack.WithCacheDir("")})
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int64{}
	for _, l := range res.Layers {
		sizes[l.Digest.String()] = l.Size
	}
	state := []string{"XDG_CACHE_HOME=" + t.TempDir(), "DOCKER_CONFIG=" + t.TempDir()}
	args := []string{"push", res.Reference, proxy.Ref("models/m") + ":v1", "--plain-http", "--jobs", "1", "--chunk-size", "1MiB", "-q"}

	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), state...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Let the first (largest) blob finish and two chunks of the next land,
	// then hold every further chunk and kill the push while one is held.
	committed := func() (done []string, patches int) {
		for _, r := range proxy.Requests() {
			if r.Method == http.MethodPut && r.Digest != "" && r.Status == http.StatusCreated {
				done = append(done, r.Digest)
			}
			if r.Method == http.MethodPatch && r.Status == http.StatusAccepted {
				patches++
			}
		}
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	var firstPatches int
	for {
		done, n := committed()
		if len(done) == 1 && firstPatches == 0 {
			firstPatches = n
		}
		if len(done) >= 1 && n >= firstPatches+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("push made no progress: %d blobs, %d chunks", len(done), n)
		}
		time.Sleep(5 * time.Millisecond) // polling the proxy's log, not standing in for sync
	}
	proxy.Inject(testenv.Fault{Method: http.MethodPatch, PathContains: "/blobs/uploads/", Times: 1 << 20, Stall: time.Hour})
	for held := false; !held; {
		for _, r := range proxy.Requests() {
			held = held || (r.Fault != "" && !r.Done)
		}
		if time.Now().After(deadline) {
			t.Fatal("no chunk was held")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	doneBefore, _ := committed()
	proxy.Reset()
	proxy.ClearFaults()
	rerun := exec.Command(binary, args...)
	rerun.Env = append(os.Environ(), state...)
	out, err := rerun.CombinedOutput()
	if err != nil {
		t.Fatalf("re-run: %v\n%s", err, out)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(out)), "@"+res.Digest.String()) {
		t.Fatalf("re-run printed %q", out)
	}
	for _, d := range doneBefore {
		if n := proxy.BytesUpFor(d); n != 0 {
			t.Errorf("finished blob %s sent again: %d bytes", d, n)
		}
	}
	var total, resent int64
	resumed := false
	for d, size := range sizes {
		n := proxy.BytesUpFor(d)
		total += size
		resent += n
		if n > 0 && n < size {
			resumed = true
			t.Logf("blob %s resumed: sent %d of %d bytes", d[:19], n, size)
		}
	}
	if !resumed {
		t.Errorf("no blob continued from the registry's offset")
	}
	t.Logf("re-run sent %d of %d layer bytes", resent, total)
	if _, err := push.Verify(context.Background(), reg.Ref("models/m")+":v1", m.Dir, "", push.WithPlainHTTP(true)); err != nil {
		t.Errorf("verify: %v", err)
	}
	t.Logf("FAULT name=kill9/push-mid-blob outcome=survived bytes_lost=0 rerun_bytes=%d layer_bytes=%d", resent, total)
}
