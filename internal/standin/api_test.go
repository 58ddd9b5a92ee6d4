package standin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/standin"
)

// TestMetricsCountRunningAndWaiting: with one slot (--max-num-seqs 1) a
// second completion waits behind a slow first one, and /metrics says so;
// requests that give up leave the counts.
func TestMetricsCountRunningAndWaiting(t *testing.T) {
	api := standin.NewAPI(standin.APIConfig{Model: "m", MaxNumSeqs: 1, SlowRequests: 1, FirstRequestDelay: time.Hour})
	api.Ready()
	srv := httptest.NewServer(api)
	defer srv.Close()
	gauges := func() (running, waiting int) {
		code, body := get(t, srv.URL+"/metrics")
		if code != 200 {
			t.Fatalf("/metrics: %d", code)
		}
		g := func(name string) int {
			m := regexp.MustCompile(regexp.QuoteMeta(name) + `\{engine="0",model_name="m"\} ([0-9]+)\.0\n`).FindStringSubmatch(body)
			if m == nil {
				t.Fatalf("no %s in\n%s", name, body)
			}
			n, _ := strconv.Atoi(m[1])
			return n
		}
		return g("vllm:num_requests_running"), g("vllm:num_requests_waiting")
	}
	send := func(ctx context.Context) chan int {
		done := make(chan int, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/completions", strings.NewReader(`{"model":"m","prompt":"x","max_tokens":1}`))
			done <- status(http.DefaultClient.Do(req))
		}()
		return done
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	a := send(ctxA)
	poll(t, "one running", func() bool { r, w := gauges(); return r == 1 && w == 0 })
	ctxB, cancelB := context.WithCancel(context.Background())
	b := send(ctxB)
	poll(t, "one waiting", func() bool { r, w := gauges(); return r == 1 && w == 1 })
	cancelB()
	<-b
	poll(t, "none waiting", func() bool { r, w := gauges(); return r == 1 && w == 0 })
	cancelA()
	<-a
	poll(t, "none running", func() bool { r, w := gauges(); return r == 0 && w == 0 })
	// The slow request was served (and gave up): the next one is steady, fast.
	if code, body := post(t, srv.URL+"/v1/completions", `{"model":"m","prompt":"x","max_tokens":1}`); code != 200 {
		t.Errorf("a steady completion: %d %s", code, body)
	}
}

func TestAPIKeyAndRestart(t *testing.T) {
	api := standin.NewAPI(standin.APIConfig{Model: "m", APIKey: "k3y"})
	srv := httptest.NewServer(api)
	defer srv.Close()
	if code, _ := get(t, srv.URL+"/health"); code != 503 {
		t.Errorf("/health of a new API: %d", code)
	}
	api.Ready()
	if code, _ := get(t, srv.URL+"/health"); code != 200 {
		t.Errorf("/health when ready: %d", code)
	}
	if code, _ := get(t, srv.URL+"/v1/models"); code != 401 {
		t.Errorf("/v1/models without the key: %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer k3y")
	if code := status(http.DefaultClient.Do(req)); code != 200 {
		t.Errorf("/v1/models with the key: %d", code)
	}
	api.Restart()
	if code, _ := get(t, srv.URL+"/health"); code != 503 || !api.Loading() {
		t.Errorf("/health after a restart: %d", code)
	}
	if code, _ := get(t, srv.URL+"/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
}
