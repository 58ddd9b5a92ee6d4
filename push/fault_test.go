package push_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// TestPushSurvivesFaults pushes through a fault-injecting proxy in front of
// a real registry. Each transient fault is survived with the digest intact;
// a permanent one fails clearly and leaves no tag.
func TestPushSurvivesFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry behind a faulty proxy")
	}
	reg := testenv.StartRegistry(t)
	_, p := packed(t, 8, 6<<20, pack.FormatTar)
	want := p.Digest.String()
	for _, tc := range []struct {
		name  string
		fault testenv.Fault
		fails string
	}{
		{name: "connection reset mid-chunk", fault: testenv.Fault{Method: http.MethodPatch, PathContains: "/blobs/uploads/", ResetAfterBytes: 300 << 10}},
		{name: "503 burst", fault: testenv.Fault{PathContains: "/blobs/", Times: 4, Status: http.StatusServiceUnavailable}},
		{name: "500 on commit", fault: testenv.Fault{Method: http.MethodPut, PathContains: "/blobs/uploads/", Times: 2, Status: http.StatusInternalServerError}},
		{name: "429 with Retry-After", fault: testenv.Fault{Method: http.MethodPost, PathContains: "/blobs/uploads/", Times: 2, Status: http.StatusTooManyRequests, RetryAfter: 1}},
		{name: "chunks refused", fault: testenv.Fault{Method: http.MethodPatch, PathContains: "/blobs/uploads/", Times: 100, Status: http.StatusMethodNotAllowed}},
		{name: "permanent 403", fault: testenv.Fault{Method: http.MethodPost, PathContains: "/blobs/uploads/", Times: 1000, Status: http.StatusForbidden}, fails: "403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := testenv.StartProxy(t, reg.Addr)
			repo := "faults/" + strings.ToLower(strings.ReplaceAll(tc.name, " ", "-"))
			proxy.Inject(tc.fault)
			res, err := push.Copy(context.Background(), p.Tagged, proxy.Ref(repo)+":v1",
				push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()), push.WithChunkSize(1<<20))
			hit := false
			for _, r := range proxy.Requests() {
				hit = hit || r.Fault != ""
			}
			if !hit {
				t.Fatalf("the fault never hit")
			}
			if tc.fails != "" {
				if err == nil || !strings.Contains(err.Error(), tc.fails) {
					t.Fatalf("err = %v, want one naming %s", err, tc.fails)
				}
				if _, err := push.Verify(context.Background(), reg.Ref(repo)+":v1", "", "", push.WithPlainHTTP(true)); err == nil {
					t.Errorf("a failed push left a tag")
				}
				t.Logf("FAULT name=http/%s outcome=failed-clearly bytes_lost=0", strings.ReplaceAll(tc.name, " ", "-"))
				return
			}
			if err != nil {
				t.Fatalf("push did not survive: %v", err)
			}
			if res.Digest != want {
				t.Fatalf("digest %s, want %s", res.Digest, want)
			}
			// Read back directly from the registry, every blob re-hashed.
			if _, err := push.Verify(context.Background(), reg.Ref(repo)+":v1", "", "", push.WithPlainHTTP(true)); err != nil {
				t.Errorf("verify after faults: %v", err)
			}
			t.Logf("FAULT name=http/%s outcome=survived bytes_lost=0", strings.ReplaceAll(tc.name, " ", "-"))
		})
	}
}
