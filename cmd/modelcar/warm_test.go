package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelcar/modelcar/internal/fakevllm"
	"github.com/modelcar/modelcar/internal/probelog"
	"github.com/modelcar/modelcar/warm"
)

// warmRoot is the root command with warm registered, whether or not
// main.go registers it yet.
func warmRoot() *cobra.Command {
	root := newRootCmd()
	if c, _, err := root.Find([]string{"warm"}); err != nil || c == root {
		root.AddCommand(newWarmCmd())
	}
	return root
}

// exitCode is main's mapping of an error to the exit status.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return 2
	}
	return 1
}

// runWarm runs modelcar in-process, as main does, with stderr to errw
// (nil: captured in the result).
func runWarm(ctx context.Context, errw io.Writer, args ...string) result {
	root := warmRoot()
	var so, se bytes.Buffer
	if errw == nil {
		errw = &se
	}
	root.SetArgs(args)
	root.SetOut(&so)
	root.SetErr(errw)
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintln(errw, "Error:", err)
	}
	return result{stdout: so.String(), stderr: se.String(), code: exitCode(err)}
}

func quick(f *fakevllm.Server) []string {
	return []string{"warm", "probe", "--url", f.URL, "--workload", "16x4@1,32x4@2", "--interval", "5ms", "--timeout", "1m"}
}

func TestWarmProbeExec(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{Model: "org/m", LoadDelay: 20 * time.Millisecond})
	ctx := context.Background()
	r := runWarm(ctx, nil, append(quick(f), "--exec", "--json")...)
	if r.code != 0 {
		t.Fatalf("exec: %+v", r)
	}
	var res warm.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Model != "org/m" || len(res.Requests) != 3 {
		t.Errorf("--json stdout %q: %v", r.stdout, err)
	}
	if !strings.Contains(r.stderr, "modelcar-warm: warm-up done in ") || !strings.Contains(r.stderr, "(3 requests)") {
		t.Errorf("stderr: %s", r.stderr)
	}
	if r := runWarm(ctx, nil, append(quick(f), "--exec")...); r.code != 0 || r.stdout != "" {
		t.Errorf("exec without --json: %+v", r)
	}
	if r := runWarm(ctx, nil, append(quick(f), "--exec", "--model", "org/other")...); r.code != 1 ||
		!strings.Contains(r.stderr, `expected "org/other"`) || !strings.Contains(r.stderr, `"org/m"`) {
		t.Errorf("model mismatch: %+v", r)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "choose one of --listen"},
		{[]string{"--exec", "--listen", ":0"}, "choose one of --listen"},
		{[]string{"--listen", ":0", "--json"}, "--json goes with --exec"},
		{[]string{"--exec", "--workload", "16x16@0"}, "--workload"},
		{[]string{"--exec", "--api", "grpc"}, "--api"},
		{[]string{"--exec", "--api-key-env", "MODELCAR_TEST_UNSET_KEY"}, "MODELCAR_TEST_UNSET_KEY is empty or unset"},
		{[]string{"--exec", "extra"}, "no arguments"},
	} {
		if r := runWarm(ctx, nil, append(quick(f), tc.args...)...); r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: %+v", tc.args, r)
		}
	}
}

func TestWarmProbeExecFailures(t *testing.T) {
	ctx := context.Background()
	f := fakevllm.Start(t, fakevllm.Options{NeverHealthy: true})
	r := runWarm(ctx, nil, append(quick(f), "--exec", "--timeout", "100ms")...)
	if r.code != 1 || !strings.Contains(r.stderr, "did not answer 200 within 100ms") || !strings.Contains(r.stderr, "503") {
		t.Errorf("never healthy: %+v", r)
	}
	f = fakevllm.Start(t, fakevllm.Options{FailStatus: 500})
	if r := runWarm(ctx, nil, append(quick(f), "--exec")...); r.code != 1 || !strings.Contains(r.stderr, "500 Internal Server Error") {
		t.Errorf("500: %+v", r)
	}
	f = fakevllm.Start(t, fakevllm.Options{Hang: true})
	if r := runWarm(ctx, nil, append(quick(f), "--exec", "--request-timeout", "50ms")...); r.code != 1 || !strings.Contains(r.stderr, "request timeout 50ms") {
		t.Errorf("request timeout: %+v", r)
	}
}

func TestWarmProbeAPIKeyEnv(t *testing.T) {
	const key = "sk-cli-secret-777"
	t.Setenv("MODELCAR_TEST_VLLM_KEY", key)
	f := fakevllm.Start(t, fakevllm.Options{RequireKey: key})
	r := runWarm(context.Background(), nil, append(quick(f), "--exec", "--json", "--api-key-env", "MODELCAR_TEST_VLLM_KEY")...)
	if r.code != 0 {
		t.Fatalf("%+v", r)
	}
	if reqs := f.Requests(); len(reqs) != 3 || reqs[0].Auth != "Bearer "+key {
		t.Errorf("requests %+v", reqs)
	}
	if strings.Contains(r.stdout+r.stderr, key) {
		t.Errorf("key printed: %+v", r)
	}
	// Without the key: exit 1, a clear 401.
	if r := runWarm(context.Background(), nil, append(quick(f), "--exec")...); r.code != 1 || !strings.Contains(r.stderr, "401") {
		t.Errorf("no key: %+v", r)
	}
}

// lineReader collects a stream's lines and hands over the bound address
// from the "listening on" line.
type lineReader struct {
	mu    sync.Mutex
	text  strings.Builder
	addr  chan string
	ended chan struct{}
}

func readLines(r io.Reader) *lineReader {
	l := &lineReader{addr: make(chan string, 1), ended: make(chan struct{})}
	go func() {
		defer close(l.ended)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.text.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
			if ev, ok := probelog.Parse(sc.Text()); ok && ev.Kind == probelog.Listening {
				l.addr <- ev.Addr
			}
		}
	}()
	return l
}

func (l *lineReader) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.String()
}

func (l *lineReader) waitAddr(t *testing.T) string {
	t.Helper()
	select {
	case a := <-l.addr:
		return a
	case <-l.ended:
		t.Fatalf("exited without listening:\n%s", l)
	case <-time.After(30 * time.Second):
		t.Fatalf("no 'listening on' line after 30s:\n%s", l)
	}
	return ""
}

func readyCode(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get(base + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func waitReady(t *testing.T, base string, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for readyCode(t, base) != want {
		if time.Now().After(deadline) {
			t.Fatalf("/ready not %d after 30s", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWarmProbeSidecar: --listen 127.0.0.1:0 logs the bound address on
// stderr; /ready is 503 while vLLM loads and 200 once the workload ran;
// the command ends cleanly when its context (SIGTERM in main) ends.
func TestWarmProbeSidecar(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{Loading: true})
	pr, pw := io.Pipe()
	lines := readLines(pr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan result, 1)
	go func() {
		done <- runWarm(ctx, pw, append(quick(f), "--listen", "127.0.0.1:0")...)
		pw.Close()
	}()
	base := "http://" + lines.waitAddr(t)
	if code := readyCode(t, base); code != 503 {
		t.Errorf("/ready while loading: %d", code)
	}
	f.Ready()
	waitReady(t, base, 200)
	if n := len(f.Requests()); n != 3 {
		t.Errorf("ready after %d requests, want 3", n)
	}
	cancel()
	if r := <-done; r.code != 0 {
		t.Errorf("sidecar exit %d\n%s", r.code, lines)
	}
	<-lines.ended
	if !strings.Contains(lines.String(), "modelcar-warm: ready after ") {
		t.Errorf("stderr:\n%s", lines)
	}
}

// TestWarmProbeBinary runs the built binary, once main.go registers warm:
// exit statuses 0, 1 and 2, and a sidecar that stops on SIGTERM.
func TestWarmProbeBinary(t *testing.T) {
	if r := run(t, nil, "warm", "probe", "--help"); r.code != 0 || !strings.Contains(r.stdout, "--workload") {
		t.Skip("main.go does not register 'modelcar warm' yet")
	}
	f := fakevllm.Start(t, fakevllm.Options{Model: "m"})
	if r := run(t, nil, append(quick(f), "--exec")...); r.code != 0 || !strings.Contains(r.stderr, "warm-up done") {
		t.Errorf("exec: %+v", r)
	}
	if r := run(t, nil, append(quick(f), "--exec", "--model", "x")...); r.code != 1 || !strings.Contains(r.stderr, "Error: served model mismatch") {
		t.Errorf("mismatch: %+v", r)
	}
	if r := run(t, nil, append(quick(f), "--exec", "--workload", "nope")...); r.code != 2 {
		t.Errorf("bad workload: %+v", r)
	}

	cmd := exec.Command(binary, append(quick(f), "--listen", "127.0.0.1:0")...)
	cmd.Env = os.Environ()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := readLines(stderr)
	base := "http://" + lines.waitAddr(t)
	waitReady(t, base, 200)
	cmd.Process.Signal(syscall.SIGTERM)
	<-lines.ended
	if err := cmd.Wait(); err != nil {
		t.Errorf("sidecar after SIGTERM: %v\n%s", err, lines)
	}
}

// TestWarmProbeURLWithoutScheme: a --url without http:// is a usage error
// (exit 2) that says the form wanted, in both modes, before any probing.
func TestWarmProbeURLWithoutScheme(t *testing.T) {
	for _, mode := range [][]string{{"--exec"}, {"--listen", "127.0.0.1:0"}} {
		for _, u := range []string{"127.0.0.1:8000", "localhost:8000"} {
			args := append([]string{"warm", "probe", "--url", u}, mode...)
			r := runWarm(context.Background(), nil, args...)
			if r.code != 2 {
				t.Errorf("%q: %+v, want exit 2", args, r)
			}
			for _, s := range []string{"--url", u, "http://HOST:PORT", "http://" + u} {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("%q: error lacks %q: %s", args, s, r.stderr)
				}
			}
		}
	}
}
