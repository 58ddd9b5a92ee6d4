package push_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// Fault suites (this file, faults_extra_test.go, fault_test.go and the
// kill -9 tests in cmd/modelcar) log one machine-readable line per fault
// they inject, which `make test-faults` (internal/cmd/faultsummary) adds up:
//
//	FAULT name=SUITE/SCENARIO/OP outcome=survived|failed-clearly bytes_lost=N resent_bytes=N
//
// survived: the operation completed despite the fault (its own retries,
// or a re-run that resumed after a kill -9); failed-clearly: it failed with
// an error that says what failed and left nothing that claims to be
// complete (in these files, a re-run once the fault is gone then
// completes). bytes_lost counts bytes that a tag or a file under its final
// name claims but does not hold correctly, measured by the test, which
// fails when it is not 0. resent_bytes, where measured, counts bytes moved
// beyond the content's size (retries, resumes, re-runs). A gap found but
// not yet fixed is logged as "KNOWN GAP: ..." and listed by the summary.

// faultOutcome names the two acceptable ends of a fault.
const (
	survived      = "survived"
	failedClearly = "failed-clearly"
)

// logFault writes the FAULT line and fails the test if bytes were lost.
func logFault(t *testing.T, name, outcome string, lost, resent int64) {
	t.Helper()
	t.Logf("FAULT name=%s outcome=%s bytes_lost=%d resent_bytes=%d", name, outcome, lost, max(resent, 0))
	if lost != 0 {
		t.Errorf("%s: %d bytes lost", name, lost)
	}
}

// tagExists reports whether repo:tag exists in reg, asked directly (not
// through any proxy), with cred for registries with auth (nil: none).
func tagExists(t *testing.T, reg *testenv.Registry, cred *auth.Credential, repoTag string) bool {
	t.Helper()
	repo, tag, _ := strings.Cut(repoTag, ":")
	req, err := http.NewRequest(http.MethodHead, reg.URL()+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json")
	if cred != nil {
		req.SetBasicAuth(cred.Username, cred.Password)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("checking tag %s: %v", repoTag, err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		return false
	case http.StatusOK:
		return true
	}
	t.Fatalf("checking tag %s: HEAD answered %s", repoTag, resp.Status)
	return false
}

// tagLost checks repo:tag in reg directly: a tag that is absent loses
// nothing; a tag that is present must verify, blob by blob, else its whole
// content (size) counts as lost.
func tagLost(t *testing.T, reg *testenv.Registry, cred *auth.Credential, repoTag string, size int64) int64 {
	t.Helper()
	if !tagExists(t, reg, cred, repoTag) {
		return 0
	}
	opts := []push.Option{push.WithPlainHTTP(true)}
	if cred != nil {
		opts = append(opts, push.WithCredentials(storeFor(t, *cred, reg.Addr)))
	}
	if _, err := push.Verify(context.Background(), reg.Ref(repoTag), "", "", opts...); err != nil {
		t.Errorf("tag %s points at content that does not verify: %v", repoTag, err)
		return size
	}
	return 0
}

// dirLost checks a pull target: every file under its final name (not a
// dot-file: those are partials and state) must equal the model's file of
// the same name; the sizes of those that do not are lost.
func dirLost(t *testing.T, modelDir, dir string) int64 {
	t.Helper()
	var lost int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		got, _ := os.ReadFile(p)
		want, werr := os.ReadFile(filepath.Join(modelDir, rel))
		if werr != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is under its final name but differs from the model", rel)
			lost += int64(max(len(got), len(want)))
		}
		return nil
	})
	return lost
}

// clearError fails the test unless err says what failed: a blob digest or
// one of the names, and not merely that the test's own deadline passed.
func clearError(t *testing.T, err error, names ...string) {
	t.Helper()
	msg := err.Error()
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the operation hung until the test's deadline: %v", err)
		return
	}
	if strings.Contains(msg, "sha256:") {
		return
	}
	for _, n := range names {
		if strings.Contains(msg, n) {
			return
		}
	}
	t.Errorf("error %q names neither a digest nor any of %q", msg, names)
}

// toxiOpTimeout bounds one operation through toxiproxy: a hang fails the
// test instead of the whole run.
const toxiOpTimeout = 2 * time.Minute

// toxiScenario is a fault toxiproxy injects on the stream that carries an
// operation's data (upstream for push, downstream for pull and mirror).
type toxiScenario struct {
	name string
	// arm sets the proxy's toxics up before the operation starts, and
	// returns the byte counter progress events feed (nil: none) and the
	// trip to check was fired (nil: the toxics are there all along).
	arm func(t *testing.T, p *testenv.ToxicProxy, stream string) (func(int64), *testenv.Trip)
	// mustSurvive[op] says the operation must complete despite the fault;
	// otherwise failing clearly is accepted too.
	mustSurvive map[string]bool
}

// faultAt is where trips fire: 1.5 MiB into the transfer, inside the first
// (largest) blob.
const faultAt = 3 << 19

func toxiScenarios() []toxiScenario {
	all := map[string]bool{"push": true, "pull": true, "mirror": true}
	add := func(txs ...testenv.Toxic) func(t *testing.T, p *testenv.ToxicProxy, stream string) (func(int64), *testenv.Trip) {
		return func(t *testing.T, p *testenv.ToxicProxy, stream string) (func(int64), *testenv.Trip) {
			for _, tx := range txs {
				if err := p.Add(tx); err != nil {
					t.Fatal(err)
				}
			}
			return nil, nil
		}
	}
	trip := func(mk func(stream string) testenv.Toxic, hold time.Duration) func(t *testing.T, p *testenv.ToxicProxy, stream string) (func(int64), *testenv.Trip) {
		return func(t *testing.T, p *testenv.ToxicProxy, stream string) (func(int64), *testenv.Trip) {
			// 8 MB/s per connection: the transfer lasts long enough
			// for the trip to strike inside it.
			if err := p.Add(testenv.Bandwidth(stream, 8192)); err != nil {
				t.Fatal(err)
			}
			tr, err := p.Arm(mk(stream), hold)
			if err != nil {
				t.Fatal(err)
			}
			return tr.After(faultAt), tr
		}
	}
	return []toxiScenario{
		{
			name: "latency",
			arm: add(
				testenv.Latency(testenv.Upstream, 50, 20),
				testenv.Latency(testenv.Downstream, 50, 20),
			),
			mustSurvive: all,
		},
		{
			// 4 MB/s per connection, both ways.
			name: "bandwidth",
			arm: add(
				testenv.Bandwidth(testenv.Upstream, 4096),
				testenv.Bandwidth(testenv.Downstream, 4096),
			),
			mustSurvive: all,
		},
		{
			// The stream cut into 1 KiB ± 512 B segments, 10µs apart.
			name: "slicer",
			arm: add(
				testenv.Slicer(testenv.Upstream, 1024, 512, 10),
				testenv.Slicer(testenv.Downstream, 1024, 512, 10),
			),
			mustSurvive: all,
		},
		{
			// TCP reset of every connection carrying data for 300ms,
			// once 1.5 MiB have moved (at 8 MB/s per connection).
			name:        "reset-peer",
			arm:         trip(func(s string) testenv.Toxic { return testenv.ResetPeer(s, 0) }, 300*time.Millisecond),
			mustSurvive: map[string]bool{"push": true},
		},
		{
			// Data stops (dropped) for 1.5s once 1.5 MiB have moved (at
			// 8 MB/s per connection); a stalled connection is closed after
			// 1s of silence, or when the stall ends.
			name:        "timeout",
			arm:         trip(func(s string) testenv.Toxic { return testenv.Timeout(s, 1000) }, 1500*time.Millisecond),
			mustSurvive: map[string]bool{"push": true},
		},
	}
}

// TestToxiproxyFaults pushes, pulls and mirrors a packed model through
// toxiproxy in front of a real registry, under each toxiScenario. Each
// operation completes (its retries absorb the fault) or fails with an
// error that says what failed, and then a re-run without the fault
// completes. After every run: no tag in the registry, read directly,
// points at content that does not verify, and every file a pull left under
// its final name is byte-identical to the model.
func TestToxiproxyFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: toxiproxy in front of real registries")
	}
	reg := testenv.StartRegistry(t)
	mirrorTo := testenv.StartRegistry(t)
	tp := testenv.StartToxiproxy(t)
	m, p := packed(t, 31, 8<<20, pack.FormatTar)
	want := p.Digest.String()
	vr, err := push.Verify(context.Background(), p.Reference, "", "")
	if err != nil {
		t.Fatal(err)
	}
	imageBytes := vr.Bytes
	var layerBytes int64
	for _, l := range p.Layers {
		layerBytes += l.Size
	}
	// The image pulls and mirrors read: pushed directly, no proxy.
	copyT(t, p.Reference, reg.Ref("toxi/src:v1"))

	n := 0
	for _, sc := range toxiScenarios() {
		for _, op := range []string{"push", "pull", "mirror"} {
			t.Run(sc.name+"/"+op, func(t *testing.T) {
				n++
				proxy := tp.Proxy(t, fmt.Sprintf("reg%d", n), reg.Addr)
				stream := testenv.Downstream
				if op == "push" {
					stream = testenv.Upstream
				}
				count, trip := sc.arm(t, proxy, stream)
				var moved atomic.Int64
				onBytes := func(k int64) {
					moved.Add(k)
					if count != nil {
						count(k)
					}
				}
				progress := push.WithProgress(func(e push.Event) { onBytes(e.Sent) })
				common := []push.Option{push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithChunkSize(1 << 20)}
				repo := "toxi/" + sc.name + "-" + op
				dir := filepath.Join(t.TempDir(), "pulled")
				var size int64
				var names []string
				var run func(ctx context.Context) error
				switch op {
				case "push":
					size, names = imageBytes, []string{proxy.Addr}
					run = func(ctx context.Context) error {
						res, err := push.Copy(ctx, p.Reference, proxy.Ref(repo)+":v1", append(common, progress)...)
						if err == nil && res.Digest != want {
							t.Fatalf("pushed %s, want %s", res.Digest, want)
						}
						return err
					}
				case "pull":
					size, names = layerBytes, []string{proxy.Addr, dir}
					run = func(ctx context.Context) error {
						dg, err := push.Pull(ctx, proxy.Ref("toxi/src:v1"), dir, push.PullOptions{Progress: onBytes}, common...)
						if err == nil && dg != want {
							t.Fatalf("pulled %s, want %s", dg, want)
						}
						return err
					}
				case "mirror":
					size, names = imageBytes, []string{proxy.Addr, mirrorTo.Addr}
					run = func(ctx context.Context) error {
						res, err := push.Copy(ctx, proxy.Ref("toxi/src:v1"), mirrorTo.Ref(repo)+":v1", append(common, progress)...)
						if err == nil && res.Digest != want {
							t.Fatalf("mirrored %s, want %s", res.Digest, want)
						}
						return err
					}
				}
				// lost checks what the operation left, read directly.
				lost := func() int64 {
					switch op {
					case "push":
						return tagLost(t, reg, nil, repo+":v1", size)
					case "mirror":
						return tagLost(t, mirrorTo, nil, repo+":v1", size)
					}
					return dirLost(t, m.Dir, dir)
				}
				complete := func() {
					t.Helper()
					var err error
					switch op {
					case "push":
						_, err = push.Verify(context.Background(), reg.Ref(repo)+":v1", m.Dir, "", push.WithPlainHTTP(true))
					case "mirror":
						_, err = push.Verify(context.Background(), mirrorTo.Ref(repo)+":v1", m.Dir, "", push.WithPlainHTTP(true))
					case "pull":
						sameTree(t, m.Dir, dir)
					}
					if err != nil {
						t.Fatalf("after the %s: %v", op, err)
					}
				}

				ctx, cancel := context.WithTimeout(context.Background(), toxiOpTimeout)
				defer cancel()
				begin := time.Now()
				err := run(ctx)
				elapsed := time.Since(begin)
				if trip != nil {
					if !trip.Fired() {
						t.Fatalf("the fault never fired (%d bytes moved)", moved.Load())
					}
					if werr := trip.Wait(30 * time.Second); werr != nil {
						t.Fatal(werr)
					}
					if err == nil && moved.Load() == size {
						t.Fatalf("the %s fired but struck nothing: no error, no byte re-sent", sc.name)
					}
				}
				if err == nil {
					complete()
					t.Logf("%s completed through %s in %v, %d bytes moved for %d", op, sc.name, elapsed.Round(time.Millisecond), moved.Load(), size)
					logFault(t, "toxi/"+sc.name+"/"+op, survived, lost(), moved.Load()-size)
					return
				}
				t.Logf("%s failed under %s after %v: %v", op, sc.name, elapsed.Round(time.Millisecond), err)
				if sc.mustSurvive[op] {
					t.Fatalf("%s must survive %s: %v", op, sc.name, err)
				}
				clearError(t, err, names...)
				lostBytes := lost()
				// The fault is gone: a re-run completes, resuming what it can.
				if err := proxy.RemoveAll(); err != nil {
					t.Fatal(err)
				}
				ctx2, cancel2 := context.WithTimeout(context.Background(), toxiOpTimeout)
				defer cancel2()
				if err := run(ctx2); err != nil {
					t.Fatalf("re-run of the %s without the fault: %v", op, err)
				}
				complete()
				logFault(t, "toxi/"+sc.name+"/"+op, failedClearly, lostBytes+lost(), moved.Load()-size)
			})
		}
	}
}

// stallBound is how long TestToxiproxyStallForever lets a push sit on a
// connection that never moves again.
const stallBound = 45 * time.Second

// TestToxiproxyStallForever stalls a push for good (a timeout toxic with no
// timeout: data dropped, the connection never closed) 1.5 MiB in. modelcar
// has no stall timeout of its own yet, so the push waits until its context
// ends: that is logged as a known gap rather than failed. What must hold
// either way: no tag in the registry points at incomplete content, and once
// the stall is gone a re-run completes.
func TestToxiproxyStallForever(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: toxiproxy in front of a real registry")
	}
	reg := testenv.StartRegistry(t)
	tp := testenv.StartToxiproxy(t)
	m, p := packed(t, 32, 8<<20, pack.FormatTar)
	size := imageSize(t, p)
	proxy := tp.Proxy(t, "reg", reg.Addr)
	if err := proxy.Add(testenv.Bandwidth(testenv.Upstream, 8192)); err != nil {
		t.Fatal(err)
	}
	trip, err := proxy.Arm(testenv.Timeout(testenv.Upstream, 0), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	count := trip.After(faultAt)
	var moved atomic.Int64
	opts := []push.Option{push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithChunkSize(1 << 20),
		push.WithIdleTimeout(time.Second), push.WithRetries(0),
		push.WithProgress(func(e push.Event) { moved.Add(e.Sent); count(e.Sent) })}
	ctx, cancel := context.WithTimeout(context.Background(), stallBound)
	defer cancel()
	_, err = push.Copy(ctx, p.Reference, proxy.Ref("toxi/stall:v1"), opts...)
	if !trip.Fired() {
		t.Fatal("the stall never fired")
	}
	gap := false
	switch {
	case err == nil:
		t.Fatal("a push through a connection stalled for good succeeded")
	case errors.Is(err, context.DeadlineExceeded):
		// The idle timeout (here 1 s) usually ends it in about 13 s; some
		// runs still reach the bound (retries of timed-out requests pile
		// up). Not yet understood, so logged for the summary, not failed.
		gap = true
		t.Logf("KNOWN GAP: a push on a connection stalled for good sometimes waits until its context ends (%v) despite the idle timeout", stallBound)
	default:
		clearError(t, err, proxy.Addr)
	}
	lost := tagLost(t, reg, nil, "toxi/stall:v1", size)
	if err := proxy.RemoveAll(); err != nil {
		t.Fatal(err)
	}
	if _, err := push.Copy(context.Background(), p.Reference, proxy.Ref("toxi/stall:v1"), opts...); err != nil {
		t.Fatalf("re-run without the stall: %v", err)
	}
	if _, err := push.Verify(context.Background(), reg.Ref("toxi/stall:v1"), m.Dir, "", push.WithPlainHTTP(true)); err != nil {
		t.Fatalf("verify after the re-run: %v", err)
	}
	if !gap {
		logFault(t, "toxi/stall-forever/push", failedClearly, lost, moved.Load()-size)
	}
}
