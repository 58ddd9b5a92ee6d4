package push_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/push"
)

// requestStall is the most one request that meets a stall for good takes
// to fail, as push.WithIdleTimeout documents it: it is sent at most twice,
// 250 ms apart.
func requestStall(idle time.Duration) time.Duration {
	return 2*idle + 250*time.Millisecond
}

// uploadStall is the most a blob upload (of a push or a mirror) takes to
// give up when its path stalls for good: retries+1 failures in a row, each
// at most one requestStall, with the uploader's backoffs (0.2 s, doubling,
// at most 5 s) in between.
func uploadStall(idle time.Duration, retries int) time.Duration {
	d := time.Duration(retries+1) * requestStall(idle)
	for i := range retries {
		d += min(200*time.Millisecond<<i, 5*time.Second)
	}
	return d
}

// stallSlack covers the transfer before the stall and scheduling on a
// loaded machine.
const stallSlack = 5 * time.Second

// phaseIdle and phaseRetries are TestFaultStallEveryPhase's idle timeout
// and upload retries.
const (
	phaseIdle    = time.Second
	phaseRetries = 1
)

// TestFaultStallEveryPhase stalls, through testenv's HTTP proxy, each kind
// of request a push, a pull and a mirror make: the proxy holds the request
// and never forwards nor answers it. Stalled once, the operation completes
// on a new connection (the uploader resumes its own requests, the others
// are re-sent once), within the time of one more attempt. Stalled for good
// (every such request), it fails within the documented bound with an error
// saying "no data for 1s" and naming a digest or the registry, leaving no
// tag on incomplete content and no wrong file; a re-run without the stall
// completes.
func TestFaultStallEveryPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registries behind a stalling proxy")
	}
	e := newFaultEnv(t, 33, 2<<20)
	for _, ph := range []struct {
		op, method, path string
		upload           bool // a request of the blob uploader
	}{
		{"push", http.MethodHead, "/blobs/sha256:", false},
		{"push", http.MethodPost, "/blobs/uploads/", true},
		{"push", http.MethodPatch, "/blobs/uploads/", true},
		{"push", http.MethodPut, "/blobs/uploads/", true},
		{"push", http.MethodHead, "/manifests/", false},
		{"push", http.MethodPut, "/manifests/", false},
		{"pull", http.MethodHead, "/manifests/", false},
		{"pull", http.MethodGet, "/manifests/", false},
		{"pull", http.MethodGet, "/blobs/", false},
		{"mirror", http.MethodHead, "/manifests/", false},
		{"mirror", http.MethodGet, "/manifests/", false},
		{"mirror", http.MethodGet, "/blobs/", false},
	} {
		phase := strings.ToLower(ph.method) + strings.ReplaceAll(strings.TrimRight(ph.path, "/:"), "/", "-")
		for _, forever := range []bool{false, true} {
			how := "once"
			if forever {
				how = "forever"
			}
			t.Run(ph.op+"/"+phase+"/"+how, func(t *testing.T) {
				t.Parallel() // mostly waiting for idle timeouts
				proxy := testenv.StartProxy(t, e.reg.Addr)
				var moved atomic.Int64
				o := e.op(t, ph.op, proxy.Addr, "stall/"+ph.op+phase+"-"+how, func(k int64) { moved.Add(k) },
					push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithChunkSize(256<<10),
					push.WithIdleTimeout(phaseIdle), push.WithRetries(phaseRetries))
				times := 1
				if forever {
					times = 1000
				}
				proxy.Inject(testenv.Fault{Method: ph.method, PathContains: ph.path, Times: times, Stall: time.Hour})
				bound := requestStall(phaseIdle) + stallSlack
				if forever && ph.upload {
					bound = uploadStall(phaseIdle, phaseRetries) + stallSlack
				}
				ctx, cancel := context.WithTimeout(context.Background(), 4*bound)
				defer cancel()
				begin := time.Now()
				err := o.run(ctx)
				elapsed := time.Since(begin)
				stalled := 0
				for _, r := range proxy.Requests() {
					if r.Fault != "" {
						stalled++
					}
				}
				if stalled == 0 {
					t.Fatalf("no %s *%s* request was stalled", ph.method, ph.path)
				}
				if ctx.Err() != nil {
					t.Fatalf("the %s ran into its context's deadline instead of noticing the stall: %v", ph.op, err)
				}
				if elapsed > bound {
					t.Errorf("the %s took %v, more than the bound %v", ph.op, elapsed, bound)
				}
				if !forever {
					if err != nil {
						t.Fatalf("the %s did not survive one stalled request: %v", ph.op, err)
					}
					o.complete()
					t.Logf("%s survived a stalled %s *%s* in %v", ph.op, ph.method, ph.path, elapsed.Round(time.Millisecond))
					logFault(t, "http/stall-"+phase+"-once/"+ph.op, survived, o.lost(), moved.Load()-o.size)
					return
				}
				if err == nil {
					t.Fatalf("the %s succeeded though every %s *%s* request stalls", ph.op, ph.method, ph.path)
				}
				t.Logf("%s with every %s *%s* stalled (%d) failed in %v (bound %v): %v", ph.op, ph.method, ph.path, stalled, elapsed.Round(time.Millisecond), bound, err)
				if !strings.Contains(err.Error(), "no data for 1s") {
					t.Errorf(`error does not say "no data for 1s": %v`, err)
				}
				clearError(t, err, o.names...)
				lost := o.lost()
				proxy.ClearFaults()
				o.rerun(t)
				logFault(t, "http/stall-"+phase+"-forever/"+ph.op, failedClearly, lost+o.lost(), moved.Load()-o.size)
			})
		}
	}
}
