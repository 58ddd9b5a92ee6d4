package push_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/renameio/v2"
	"golang.org/x/crypto/bcrypt"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// extraOpTimeout bounds each operation of these tests.
const extraOpTimeout = 2 * time.Minute

// imageSize is the bytes of every blob and manifest of the packed image.
func imageSize(t *testing.T, p *pack.Result) int64 {
	t.Helper()
	vr, err := push.Verify(context.Background(), p.Tagged, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return vr.Bytes
}

// blobProgress tells, from push progress events, when the first blob has
// been committed and how far the next one has gone.
type blobProgress struct {
	mu   sync.Mutex
	done int              // blobs committed
	sent map[string]int64 // digest -> bytes sent
	all  atomic.Int64     // every byte sent
}

// event records e and reports whether a blob other than the committed
// ones has sent at least n bytes since the first commit.
func (b *blobProgress) event(e push.Event, n int64) bool {
	b.all.Add(e.Sent)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sent == nil {
		b.sent = map[string]int64{}
	}
	if e.Done && !e.Skipped && !e.Mounted {
		b.done++
		delete(b.sent, e.Digest)
		return false
	}
	if b.done == 0 {
		return false
	}
	b.sent[e.Digest] += e.Sent
	return b.sent[e.Digest] >= n
}

// TestExtraFaultRegistryRestart restarts the registry (stop, start on the
// same address and storage) while a push is in the middle of its second
// blob, from the push's own progress callback. The upload session dies with
// the process; the push goes on with a new one and completes, and the image
// verifies in the registry.
func TestExtraFaultRegistryRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: restarts a real registry mid-push")
	}
	reg := testenv.StartRegistry(t)
	m, p := packed(t, 41, 8<<20, pack.FormatTar)
	size := imageSize(t, p)
	var bp blobProgress
	// The restart runs on the test goroutine (Restart may fail the test);
	// the callback waits for it, so the registry goes away mid-chunk.
	restart, restarted := make(chan struct{}), make(chan struct{})
	var once sync.Once
	progress := func(e push.Event) {
		if bp.event(e, 3<<19) { // 1.5 MiB into the second blob
			once.Do(func() {
				restart <- struct{}{}
				<-restarted
			})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), extraOpTimeout)
	defer cancel()
	type result struct {
		res *push.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := push.Copy(ctx, p.Tagged, reg.Ref("restart/m:v1"), push.WithPlainHTTP(true),
			push.WithStateDir(t.TempDir()), push.WithChunkSize(1<<20), push.WithJobs(1), push.WithProgress(progress))
		done <- result{res, err}
	}()
	var r result
	select {
	case <-restart:
		reg.Restart(t)
		close(restarted)
		r = <-done
	case r = <-done:
		t.Fatalf("the push ended before the restart: %+v, %v", r.res, r.err)
	}
	if r.err != nil {
		t.Fatalf("push across a registry restart: %v", r.err)
	}
	if r.res.Digest != p.Digest.String() {
		t.Fatalf("pushed %s, want %s", r.res.Digest, p.Digest)
	}
	if _, err := push.Verify(context.Background(), reg.Ref("restart/m:v1"), m.Dir, "", push.WithPlainHTTP(true)); err != nil {
		t.Fatalf("verify after the restart: %v", err)
	}
	logFault(t, "extra/registry-restart/push", survived, tagLost(t, reg, nil, "restart/m:v1", size), bp.all.Load()-size)
}

// pushErrorsNameRegistry: push.Copy's errors do not name the destination
// yet ("destination: Push: pushing blob sha256:...: starting upload:
// registry answered 401 Unauthorized"), nor does the CLI around them. Until
// they do, TestExtraFaultCredentialRevoked logs the gap instead of failing;
// set it to true with the fix.
const pushErrorsNameRegistry = true

// writeHtpasswd replaces the registry's htpasswd file (StartRegistry keeps
// it beside config.yml) with user:password.
func writeHtpasswd(t *testing.T, reg *testenv.Registry, user, password string) error {
	path := filepath.Join(filepath.Dir(reg.Config), "htpasswd")
	if _, err := os.Stat(path); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return err
	}
	return renameio.WriteFile(path, []byte(user+":"+string(hash)+"\n"), 0o600, renameio.WithTempDir(filepath.Dir(path)))
}

// basicAuthOK reports whether reg accepts user:password on GET /v2/.
func basicAuthOK(t *testing.T, reg *testenv.Registry, user, password string) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, reg.URL()+"/v2/", nil)
	req.SetBasicAuth(user, password)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestExtraFaultCredentialRevoked: a registry with htpasswd auth changes
// the user's password while a push is between blobs (from the push's
// progress callback). The push fails with a 401 that names the registry,
// writes no tag, and never shows the password; a re-run with the new
// password completes, skipping the blobs already there.
func TestExtraFaultCredentialRevoked(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry with htpasswd auth")
	}
	const user = "modelcar"
	oldPW, newPW := testenv.NewSecret(t, user), testenv.NewSecret(t, user)
	reg := testenv.StartRegistry(t, testenv.WithHtpasswd(user, oldPW))
	m, p := packed(t, 42, 8<<20, pack.FormatTar)
	size := imageSize(t, p)
	// The registry re-reads htpasswd when it changes (distribution 2.8.2
	// as Debian ships it does; should one not, the test restarts it, on
	// the test goroutine while the callback waits): either way the old
	// password stops working between two blobs.
	var bp blobProgress
	revoke, revoked := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var revokeErr error
	progress := func(e push.Event) {
		if bp.event(e, 0) {
			once.Do(func() {
				revokeErr = writeHtpasswd(t, reg, user, newPW)
				revoke <- struct{}{}
				<-revoked
			})
		}
	}
	oldCreds := push.WithCredentials(storeFor(t, auth.Credential{Username: user, Password: oldPW}, reg.Addr))
	ctx, cancel := context.WithTimeout(context.Background(), extraOpTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := push.Copy(ctx, p.Tagged, reg.Ref("revoked/m:v1"), push.WithPlainHTTP(true), oldCreds,
			push.WithStateDir(t.TempDir()), push.WithChunkSize(1<<20), push.WithJobs(1), push.WithProgress(progress))
		done <- err
	}()
	var err error
	select {
	case <-revoke:
		if revokeErr != nil {
			t.Fatalf("rewriting htpasswd: %v", revokeErr)
		}
		if basicAuthOK(t, reg, user, oldPW) {
			reg.Restart(t)
		}
		if basicAuthOK(t, reg, user, oldPW) || !basicAuthOK(t, reg, user, newPW) {
			t.Fatal("the password change did not take effect")
		}
		close(revoked)
		err = <-done
	case err = <-done:
		t.Fatalf("the push ended before the password changed: %v", err)
	}
	if err == nil {
		t.Fatal("the push succeeded with a revoked password")
	}
	t.Logf("push with a revoked password: %v", err)
	msg := err.Error()
	if !strings.Contains(msg, "401") {
		t.Errorf("error does not say 401: %v", err)
	}
	if !strings.Contains(msg, reg.Addr) {
		if pushErrorsNameRegistry {
			t.Errorf("error does not name the registry %s: %v", reg.Addr, err)
		} else {
			t.Logf("KNOWN GAP: a push refused with 401 fails with an error that does not name the registry")
		}
	}
	for _, pw := range []string{oldPW, newPW} {
		if strings.Contains(msg, pw) {
			t.Errorf("error shows a password: %v", testenv.Mask(msg))
		}
	}
	newCred := auth.Credential{Username: user, Password: newPW}
	if tagExists(t, reg, &newCred, "revoked/m:v1") {
		t.Error("a push that failed wrote its tag")
	}
	lost := tagLost(t, reg, &newCred, "revoked/m:v1", size)
	// The password is right again: a re-run completes.
	res, err := push.Copy(context.Background(), p.Tagged, reg.Ref("revoked/m:v1"), push.WithPlainHTTP(true),
		push.WithCredentials(storeFor(t, newCred, reg.Addr)), push.WithStateDir(t.TempDir()), push.WithChunkSize(1<<20),
		push.WithProgress(func(e push.Event) { bp.all.Add(e.Sent) }))
	if err != nil {
		t.Fatalf("re-run with the new password: %v", err)
	}
	if res.Skipped == 0 {
		t.Errorf("the re-run skipped no blob: %+v", res)
	}
	if _, err := push.Verify(context.Background(), reg.Ref("revoked/m:v1"), m.Dir, "", push.WithPlainHTTP(true),
		push.WithCredentials(storeFor(t, newCred, reg.Addr))); err != nil {
		t.Fatalf("verify after the re-run: %v", err)
	}
	logFault(t, "extra/credential-revoked/push", failedClearly, lost, bp.all.Load()-size)
}

// blobData is where the filesystem driver of distribution keeps a blob.
func blobData(reg *testenv.Registry, hex string) string {
	return filepath.Join(reg.Root, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}

// flipByte inverts one byte of a file in place.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	b := make([]byte, 1)
	if _, err := fh.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := fh.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestExtraFaultCorruptSourceBlob: the source registry serves a layer whose
// stored bytes no longer match its digest (one byte flipped on disk). A
// mirror to another registry fails with an error naming the digest, and the
// destination holds neither the tag nor the corrupt blob; a pull fails the
// same way and leaves no wrong file under its final name. Repaired, both
// complete.
func TestExtraFaultCorruptSourceBlob(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registries")
	}
	src := testenv.StartRegistry(t)
	dst := testenv.StartRegistry(t)
	m, p := packed(t, 43, 8<<20, pack.FormatTar)
	size := imageSize(t, p)
	copyT(t, p.Tagged, src.Ref("corrupt/m:v1"))
	bad := p.Layers[0]
	for _, l := range p.Layers {
		if l.Size > bad.Size {
			bad = l
		}
	}
	data := blobData(src, bad.Digest.Hex)
	flipByte(t, data, bad.Size/2)

	t.Run("mirror", func(t *testing.T) {
		var moved atomic.Int64
		opts := []push.Option{push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithChunkSize(1 << 20),
			push.WithProgress(func(e push.Event) { moved.Add(e.Sent) })}
		ctx, cancel := context.WithTimeout(context.Background(), extraOpTimeout)
		defer cancel()
		_, err := push.Copy(ctx, src.Ref("corrupt/m:v1"), dst.Ref("corrupt/m:v1"), opts...)
		if err == nil {
			t.Fatal("mirroring a corrupt blob succeeded")
		}
		t.Logf("mirror of a corrupt blob: %v", err)
		if !strings.Contains(err.Error(), bad.Digest.String()) || !strings.Contains(strings.ToLower(err.Error()), "digest") {
			t.Errorf("error does not name the digest mismatch of %s: %v", bad.Digest, err)
		}
		if tagExists(t, dst, nil, "corrupt/m:v1") {
			t.Error("the destination has the tag")
		}
		if blobExists(t, dst, "corrupt/m", bad.Digest.String()) {
			t.Error("the destination accepted the corrupt blob")
		}
		lost := tagLost(t, dst, nil, "corrupt/m:v1", size)
		flipByte(t, data, bad.Size/2) // repaired
		defer flipByte(t, data, bad.Size/2)
		// With the first run's state directory, the uploader resumes the
		// session that holds the corrupt bytes (the registry reports them
		// all received), commits it again and gets DIGEST_INVALID again, on
		// every re-run: a commit rejected for its digest should drop the
		// saved session. Until it does, that is logged and the re-run
		// repeated with a fresh state directory.
		if _, err := push.Copy(context.Background(), src.Ref("corrupt/m:v1"), dst.Ref("corrupt/m:v1"), opts...); err != nil {
			if !strings.Contains(err.Error(), "DIGEST_INVALID") {
				t.Fatalf("mirror after the repair: %v", err)
			}
			t.Errorf("after a commit rejected with DIGEST_INVALID, the re-run resumed the saved session holding the bad bytes")
			opts = append(opts, push.WithStateDir(t.TempDir()))
			if _, err := push.Copy(context.Background(), src.Ref("corrupt/m:v1"), dst.Ref("corrupt/m:v1"), opts...); err != nil {
				t.Fatalf("mirror after the repair, fresh state: %v", err)
			}
		}
		if _, err := push.Verify(context.Background(), dst.Ref("corrupt/m:v1"), m.Dir, "", push.WithPlainHTTP(true)); err != nil {
			t.Fatalf("verify after the repair: %v", err)
		}
		logFault(t, "extra/corrupt-source-blob/mirror", failedClearly, lost, moved.Load()-size)
	})

	t.Run("pull", func(t *testing.T) {
		var moved atomic.Int64
		dir := filepath.Join(t.TempDir(), "pulled")
		po := push.PullOptions{Progress: func(n int64) { moved.Add(n) }}
		ctx, cancel := context.WithTimeout(context.Background(), extraOpTimeout)
		defer cancel()
		_, err := push.Pull(ctx, src.Ref("corrupt/m:v1"), dir, po, push.WithPlainHTTP(true))
		if err == nil {
			t.Fatal("pulling a corrupt blob succeeded")
		}
		t.Logf("pull of a corrupt blob: %v", err)
		if !strings.Contains(err.Error(), bad.Digest.String()) {
			t.Errorf("error does not name %s: %v", bad.Digest, err)
		}
		lost := dirLost(t, m.Dir, dir)
		flipByte(t, data, bad.Size/2) // repaired
		defer flipByte(t, data, bad.Size/2)
		if _, err := push.Pull(context.Background(), src.Ref("corrupt/m:v1"), dir, po, push.WithPlainHTTP(true)); err != nil {
			t.Fatalf("pull after the repair: %v", err)
		}
		sameTree(t, m.Dir, dir)
		var layers int64
		for _, l := range p.Layers {
			layers += l.Size
		}
		logFault(t, "extra/corrupt-source-blob/pull", failedClearly, lost, moved.Load()-layers)
	})
}

// blobExists reports whether reg has digest in repo (HEAD, no auth).
func blobExists(t *testing.T, reg *testenv.Registry, repo, digest string) bool {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Head(reg.URL() + "/v2/" + repo + "/blobs/" + digest)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
