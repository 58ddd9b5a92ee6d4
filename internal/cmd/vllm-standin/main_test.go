package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/testmodel"
)

// TestMain runs main instead of the tests when the test binary is started
// as the stand-in by the tests below.
func TestMain(m *testing.M) {
	if os.Getenv("VLLM_STANDIN_TEST_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startMain starts this binary as the stand-in with args.
func startMain(t *testing.T, args ...string) (*exec.Cmd, io.Reader, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "VLLM_STANDIN_TEST_AS_MAIN=1", "STANDIN_COMPILE_SECONDS=0.05", "STANDIN_GRAPH_SECONDS=0.01",
		"VLLM_CACHE_ROOT="+t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, stdout, &stderr
}

// TestServesUntilSIGTERM: the process started as the chart starts it
// serves /health 200 after "Application startup complete.", and exits 0
// on SIGTERM after uvicorn's shutdown lines.
func TestServesUntilSIGTERM(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	if _, err := testmodel.Generate(dir, testmodel.Options{Seed: 1, TotalSize: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	cmd, stdout, stderr := startMain(t, "--model", dir, "--served-model-name", "m", "--port", "0", "--host", "127.0.0.1",
		"--tensor-parallel-size", "1", "--load-format", "auto")
	var log strings.Builder
	sc := bufio.NewScanner(stdout)
	addr := regexp.MustCompile(`Starting vLLM API server 0 on (http://127\.0\.0\.1:[0-9]+)`)
	var base string
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if m := addr.FindStringSubmatch(sc.Text()); m != nil {
			base = m[1]
		}
		if strings.Contains(sc.Text(), "Application startup complete.") {
			break
		}
	}
	if base == "" {
		t.Fatalf("no start-up; stdout:\n%s\nstderr:\n%s", log.String(), stderr)
	}
	resp, err := http.Get(base + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/health after start-up: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stdout)
	log.Write(rest)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s\n%s", err, log.String(), stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30s after SIGTERM")
	}
	if !strings.Contains(log.String(), "Application shutdown complete.") {
		t.Errorf("no shutdown lines:\n%s", log.String())
	}
}

// TestBrokenModelExits1: a truncated shard ends the process with status 1
// and an error naming the file.
func TestBrokenModelExits1(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	if _, err := testmodel.Generate(dir, testmodel.Options{Seed: 1, TotalSize: 1 << 20, Shards: 1}); err != nil {
		t.Fatal(err)
	}
	shard := filepath.Join(dir, "model.safetensors")
	st, err := os.Stat(shard)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(shard, st.Size()-100); err != nil {
		t.Fatal(err)
	}
	cmd, stdout, stderr := startMain(t, "serve", dir, "--port", "0", "--host", "127.0.0.1")
	io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("exit: %v", err)
	}
	if msg := stderr.String(); !strings.Contains(msg, "vllm-standin: ERROR: model.safetensors: safetensors header: truncated") {
		t.Errorf("stderr: %s", msg)
	}
}

func TestVersion(t *testing.T) {
	cmd, stdout, _ := startMain(t, "--version")
	out, _ := io.ReadAll(stdout)
	if err := cmd.Wait(); err != nil || !strings.HasPrefix(string(out), "vllm-standin devel (vLLM 0.11.0)") {
		t.Errorf("--version: %q %v", out, err)
	}
}
