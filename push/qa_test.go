package push_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// layoutBlobBytes is the size of every blob (manifest, config, layers) of
// a single-image layout, and their count.
func layoutBlobBytes(t *testing.T, reference string) (int64, int) {
	t.Helper()
	dir := strings.TrimSuffix(strings.TrimPrefix(reference, "oci:"), ":v1")
	ents, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n, len(ents)
}

// TestPushBytesSentToRegistry: bytesSent counts every byte of every blob
// and manifest uploaded to a registry, chunked or monolithic; nothing on
// a repeat; only the manifest when the blobs are mounted.
func TestPushBytesSentToRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry")
	}
	reg := testenv.StartRegistry(t)
	_, p := packed(t, 41, 3<<20, pack.FormatTar)
	want, blobs := layoutBlobBytes(t, p.Tagged)
	for _, c := range []struct {
		repo string
		opts []push.Option
	}{
		{"bytes/chunked", []push.Option{push.WithChunkSize(256 << 10)}},
		{"bytes/monolithic", []push.Option{push.WithMonolithic(true)}},
	} {
		res := copyT(t, p.Tagged, reg.Ref(c.repo)+":v1", c.opts...)
		if res.BytesSent != want || res.Copied != blobs {
			t.Errorf("%s: first push sent %d bytes in %d blobs, want %d in %d", c.repo, res.BytesSent, res.Copied, want, blobs)
		}
		again := copyT(t, p.Tagged, reg.Ref(c.repo)+":v1", c.opts...)
		if again.BytesSent != 0 || again.Copied != 0 {
			t.Errorf("%s: repeat sent %d bytes in %d blobs", c.repo, again.BytesSent, again.Copied)
		}
		if again.Skipped != blobs {
			t.Errorf("%s: repeat skipped %d blobs, want all %d (the registry has them)", c.repo, again.Skipped, blobs)
		}
	}
	mounted := copyT(t, reg.Ref("bytes/chunked")+":v1", reg.Ref("bytes/mounted")+":v1")
	if mounted.Mounted == 0 || mounted.BytesSent != mounted.Size {
		t.Errorf("mounted copy: %d mounted, sent %d bytes, want only the %d-byte manifest", mounted.Mounted, mounted.BytesSent, mounted.Size)
	}
}

// TestErrorsNameReferenceOnce: a missing tag is named once in the errors
// of Pull, ReadImage, Verify and Copy.
func TestErrorsNameReferenceOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry")
	}
	reg := testenv.StartRegistry(t)
	_, p := packed(t, 42, 1<<20, pack.FormatTar)
	copyT(t, p.Tagged, reg.Ref("models/qwen")+":v1")
	missing := reg.Ref("models/qwen") + ":nope"
	opts := []push.Option{push.WithPlainHTTP(true), push.WithStateDir(t.TempDir())}
	ctx := context.Background()
	_, pullErr := push.Pull(ctx, missing, filepath.Join(t.TempDir(), "out"), push.PullOptions{}, opts...)
	_, readErr := push.ReadImage(ctx, missing, v1.Platform{}, opts...)
	_, verifyErr := push.Verify(ctx, missing, "", "", opts...)
	_, copyErr := push.Copy(ctx, missing, "oci:"+filepath.Join(t.TempDir(), "oci"), opts...)
	for name, err := range map[string]error{"pull": pullErr, "read": readErr, "verify": verifyErr, "copy": copyErr} {
		if err == nil {
			t.Errorf("%s of a missing tag succeeded", name)
			continue
		}
		if n := strings.Count(err.Error(), missing); n != 1 {
			t.Errorf("%s: %q names %s %d times", name, err, missing, n)
		}
		if !strings.Contains(err.Error(), "not found") {
			t.Errorf("%s: %q does not say not found", name, err)
		}
	}
}

// TestLayoutMissingTagNamedOnce: the same for a layout.
func TestLayoutMissingTagNamedOnce(t *testing.T) {
	_, p := packed(t, 43, 1<<20, pack.FormatTar)
	dir := strings.TrimSuffix(strings.TrimPrefix(p.Tagged, "oci:"), ":v1")
	_, err := push.Pull(context.Background(), "oci:"+dir+":nope", filepath.Join(t.TempDir(), "out"), push.PullOptions{})
	if err == nil || strings.Count(err.Error(), dir) != 1 || !strings.Contains(err.Error(), "nope") {
		t.Errorf("pull of a missing layout tag: %v", err)
	}
}

// TestPackStartUploadErrorOnce: an upload that cannot start says
// "starting upload" once.
func TestPackStartUploadErrorOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now: connections are refused
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: 44, TotalSize: 64 << 10, Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = push.Pack(context.Background(), m.Dir, addr+"/models/m:v1", []pack.Option{pack.WithCacheDir("")},
		push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithRetries(0), push.WithIdleTimeout(5e9))
	if err == nil {
		t.Fatal("pack to a closed port succeeded")
	}
	if n := strings.Count(err.Error(), "starting upload"); n > 1 {
		t.Errorf("%q says starting upload %d times", err, n)
	}
}

// TestPullMissingPrefix: a prefix the image does not have fails, names the
// prefix and the directories the image has, and leaves no directory that
// looks like a complete pull.
func TestPullMissingPrefix(t *testing.T) {
	_, p := packed(t, 45, 1<<20, pack.FormatTar)
	dir := filepath.Join(t.TempDir(), "out")
	_, err := push.Pull(context.Background(), p.Tagged, dir, push.PullOptions{Prefix: "/nonexist"})
	if err == nil {
		t.Fatal("pull --prefix /nonexist succeeded")
	}
	if !strings.Contains(err.Error(), "/nonexist") || !strings.Contains(err.Error(), "/models") {
		t.Errorf("error %q names neither the prefix nor what the image has", err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pull left %s behind: %v", dir, err)
	}
	// An empty directory given by the caller stays, empty.
	empty := t.TempDir()
	if _, err := push.Pull(context.Background(), p.Tagged, empty, push.PullOptions{Prefix: "/nonexist"}); err == nil {
		t.Fatal("pull --prefix /nonexist into an empty directory succeeded")
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("pull left %v in %s", ents, empty)
	}
	// The same directory then takes the right prefix.
	if _, err := push.Pull(context.Background(), p.Tagged, empty, push.PullOptions{}); err != nil {
		t.Errorf("pull after a wrong prefix: %v", err)
	}
}

// TestOptionsRefused: options that cannot apply are errors, not ignored.
func TestOptionsRefused(t *testing.T) {
	_, p := packed(t, 46, 256<<10, pack.FormatTar)
	ctx := context.Background()
	dst := filepath.Join(t.TempDir(), "oci")
	if _, err := push.Copy(ctx, p.Tagged, "oci:"+dst, push.WithSplitSize(10<<20)); err == nil || !strings.Contains(err.Error(), "--split-size") {
		t.Errorf("split size for a layout destination: %v", err)
	}
	if _, err := os.Lstat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused copy created %s", dst)
	}
	if _, err := push.Pack(ctx, t.TempDir(), "localhost:1/models/m:v1", nil, push.WithSplitSize(10<<20)); err == nil || !strings.Contains(err.Error(), "--split-size") {
		t.Errorf("split size for pack to a registry: %v", err)
	}
	for _, n := range []int{0, -1} {
		if _, err := push.Copy(ctx, p.Tagged, "oci:"+dst, push.WithJobs(n)); err == nil || !strings.Contains(err.Error(), "--jobs") {
			t.Errorf("jobs %d: %v", n, err)
		}
	}
	if err := push.Extract(ctx, empty.Image, filepath.Join(t.TempDir(), "x"), push.ExtractOptions{Jobs: -1}); err == nil {
		t.Errorf("Extract with Jobs -1 succeeded")
	}
	for _, pl := range []v1.Platform{{OS: "linux"}, {Architecture: "arm64"}, {Variant: "v8"}} {
		if _, err := push.Pull(ctx, p.Tagged, filepath.Join(t.TempDir(), "out"), push.PullOptions{Platform: pl}); err == nil || !strings.Contains(err.Error(), "platform") {
			t.Errorf("pull with platform %+v: %v", pl, err)
		}
		if _, err := push.ReadImage(ctx, p.Tagged, pl); err == nil || !strings.Contains(err.Error(), "platform") {
			t.Errorf("ReadImage with platform %+v: %v", pl, err)
		}
	}
}

// TestPullArm64V8FromIndex: an index listing linux/arm64 serves a pull of
// linux/arm64/v8.
func TestPullArm64V8FromIndex(t *testing.T) {
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: 47, TotalSize: 256 << 10, Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	local, err := push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "oci")+":v1", []pack.Option{pack.WithCacheDir(""), pack.WithPlatform("linux/amd64,linux/arm64")})
	if err != nil {
		t.Fatal(err)
	}
	var arm string
	for _, pl := range local.Platforms {
		if pl.Platform == "linux/arm64" {
			arm = pl.Digest.String()
		}
	}
	if arm == "" {
		t.Fatalf("platforms %+v", local.Platforms)
	}
	dg, err := push.Pull(context.Background(), local.Tagged, filepath.Join(t.TempDir(), "out"),
		push.PullOptions{Platform: v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}})
	if err != nil || dg.Manifest != arm {
		t.Errorf("pull linux/arm64/v8: %+v %v, want %s", dg, err, arm)
	}
}
