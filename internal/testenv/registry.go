package testenv

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a private docker-registry (distribution 2.8) started by
// StartRegistry. It speaks plain HTTP on 127.0.0.1 only: clients need their
// "insecure"/"plain HTTP" switch (ggcr's name.Insecure is implied for
// 127.0.0.1 references, crane's --insecure, oras's --plain-http, skopeo's
// --tls-verify=false).
type Registry struct {
	// Addr is host:port, always 127.0.0.1:PORT.
	Addr string
	// Root is the filesystem storage driver's root directory.
	Root string
	// LogFile receives the registry's stdout and stderr (all starts).
	LogFile string
	// Config is the config.yml the registry runs with.
	Config string
	// User and Password are the basic-auth credentials WithHtpasswd (or
	// WithTokenAuth) set; both are empty when the registry accepts anonymous
	// requests.
	User, Password string

	bin    string
	dir    string
	proc   *process
	tokens *tokenServer // WithTokenAuth's token server, else nil
}

// RegistryOption configures StartRegistry.
type RegistryOption func(*registryOptions)

type registryOptions struct {
	user, password string
	// auth, when set (WithTokenAuth), prepares the registry's auth in r.dir
	// and returns the config's auth section, which replaces htpasswd's.
	auth func(t testing.TB, r *Registry) []string
}

// WithHtpasswd makes the registry require HTTP basic auth with user and
// password, from an htpasswd file (bcrypt, the only scheme distribution
// accepts). Anonymous requests get 401. Draw password with NewSecret; it is
// recorded either way (RecordSecret).
func WithHtpasswd(user, password string) RegistryOption {
	return func(o *registryOptions) {
		o.user, o.password = user, password
	}
}

// registryStartTimeout bounds the wait for GET /v2/ to answer.
const registryStartTimeout = 30 * time.Second

// RegistryConfig renders a distribution 2.8 (config version 0.1)
// configuration. Upload purging is off: it would delete uploads older than a
// week at startup and then every day, on a timer tests don't control.
// make bench (internal/cmd/pushbench) runs its registries with it too.
func RegistryConfig(root, addr, htpasswd string, auth ...string) string {
	q := strconv.Quote
	lines := []string{
		`version: 0.1`,
		`log:`,
		`  level: info`,
		`  formatter: text`,
		`  fields:`,
		`    service: modelcar-testenv-registry`,
		`storage:`,
		`  filesystem:`,
		`    rootdirectory: ` + q(root),
		`  delete:`,
		`    enabled: true`,
		`  maintenance:`,
		`    uploadpurging:`,
		`      enabled: false`,
		`http:`,
		`  addr: ` + q(addr),
		`  headers:`,
		`    X-Content-Type-Options: [nosniff]`,
	}
	if len(auth) > 0 {
		lines = append(lines, auth...)
	} else if htpasswd != "" {
		lines = append(lines,
			`auth:`,
			`  htpasswd:`,
			`    realm: modelcar-testenv`,
			`    path: `+q(htpasswd),
		)
	}
	return strings.Join(lines, "\n") + "\n"
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that was free a moment
// ago: the kernel picks it for a listener that is closed at once.
func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: finding a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return port
}

// registryEnv is the caller's environment minus REGISTRY_* variables, which
// distribution reads as overrides of its configuration file (an inherited
// REGISTRY_HTTP_ADDR would move the listener, for example).
func registryEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "REGISTRY_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// StartRegistry starts Debian's docker-registry (distribution 2.8,
// /usr/bin/docker-registry) with filesystem storage under a temporary
// directory, listening on 127.0.0.1 on a free port, with deletes enabled and
// no authentication unless WithHtpasswd is given. It waits until GET /v2/
// answers (200, or 401 with auth), and stops the registry by PID (SIGTERM,
// then SIGKILL) in cleanup. The registry's log goes to r.LogFile; its tail is
// written to t.Log when the test failed.
//
// A missing docker-registry skips the test (fails it under MODELCAR_E2E=1).
func StartRegistry(t testing.TB, opts ...RegistryOption) *Registry {
	t.Helper()
	var o registryOptions
	for _, opt := range opts {
		opt(&o)
	}
	bin := LookPath(t, "docker-registry")

	dir := shortTempDir(t, "mc-reg-")
	r := &Registry{
		Root:     filepath.Join(dir, "storage"),
		LogFile:  filepath.Join(dir, "registry.log"),
		Config:   filepath.Join(dir, "config.yml"),
		User:     o.user,
		Password: o.password,
		bin:      bin,
		dir:      dir,
	}
	// Registered first, so it runs last: after the registry is stopped.
	cleanupServiceDir(t, "registry", dir, r.LogFile, 80)
	if err := os.MkdirAll(r.Root, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Recorded for the leak checks, with the basic-auth form clients send.
	RecordSecret(t, o.password, o.user)
	htpasswd := ""
	var authLines []string
	if o.auth != nil {
		authLines = o.auth(t, r)
	} else if o.user != "" || o.password != "" {
		if o.user == "" || strings.ContainsAny(o.user, ":\n") {
			t.Fatalf("testenv: WithHtpasswd: invalid user name %q", o.user)
		}
		// The lowest cost keeps every authenticated request cheap; these
		// credentials protect nothing.
		hash, err := bcrypt.GenerateFromPassword([]byte(o.password), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("testenv: hashing the registry password: %v", err)
		}
		htpasswd = filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(o.user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	t.Cleanup(func() { r.stop(t) })

	// The port is free when picked but not reserved: should another process
	// take it before the registry binds it, pick another one.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freeLoopbackPort(t)))
		if err := os.WriteFile(r.Config, []byte(RegistryConfig(r.Root, r.Addr, htpasswd, authLines...)), 0o644); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		err := r.start(t)
		if err == nil {
			break
		}
		if attempt < attempts && strings.Contains(tailFile(r.LogFile, 20), "address already in use") {
			t.Logf("testenv: registry port %s was taken; retrying on another port", r.Addr)
			continue
		}
		t.Fatalf("testenv: %v\n%s", err, tailFile(r.LogFile, 40))
	}
	return r
}

// Ref returns the reference of repo in this registry: "127.0.0.1:PORT/repo".
// repo may carry a ":tag" or "@digest".
func (r *Registry) Ref(repo string) string {
	return r.Addr + "/" + strings.TrimPrefix(repo, "/")
}

// URL returns the registry's base URL, "http://127.0.0.1:PORT".
func (r *Registry) URL() string {
	return "http://" + r.Addr
}

// Restart stops the registry (SIGTERM, then SIGKILL) and starts it again on
// the same address with the same configuration and storage, for tests of
// clients that must survive a registry going away. Uploads in progress are
// lost with the process; committed blobs and manifests are kept.
func (r *Registry) Restart(t testing.TB) {
	t.Helper()
	r.stop(t)
	if err := r.start(t); err != nil {
		t.Fatalf("testenv: restarting registry: %v\n%s", err, tailFile(r.LogFile, 40))
	}
}

// start runs the registry binary and waits until GET /v2/ answers. It does
// not fail the test: on error the process has been stopped again.
func (r *Registry) start(t testing.TB) error {
	t.Helper()
	header := fmt.Sprintf("=== testenv: starting %s serve %s on %s at %s\n", r.bin, r.Config, r.Addr, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(r.bin, "serve", r.Config)
	cmd.Env = registryEnv()
	cmd.Dir = r.dir
	p, err := startProcess("registry", cmd, r.LogFile, header)
	if err != nil {
		return err
	}
	r.proc = p

	begin := time.Now()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	url := r.URL() + "/v2/"
	var lastErr error
	for {
		if p.exited() {
			return fmt.Errorf("registry (pid %d) exited during startup: %v", p.pid, p.err)
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK, http.StatusUnauthorized:
				t.Logf("testenv: registry pid %d on %s (ready in %v)", p.pid, r.Addr, time.Since(begin).Round(time.Millisecond))
				return nil
			}
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		lastErr = err
		if time.Since(begin) > registryStartTimeout {
			r.stop(t)
			return fmt.Errorf("registry (pid %d) did not answer GET %s within %v: %v", p.pid, url, registryStartTimeout, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM to the registry, then SIGKILL if it has not exited
// after 10 seconds. It signals the PID it started, nothing else.
func (r *Registry) stop(t testing.TB) {
	p := r.proc
	if p == nil {
		return
	}
	r.proc = nil
	p.stop(t, 10*time.Second)
}

// registryAnswers reports whether anything answers GET /v2/ on addr (any
// HTTP status counts).
func registryAnswers(ctx context.Context, addr string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
	if err != nil {
		return false
	}
	resp, err := (&http.Transport{Proxy: nil}).RoundTrip(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}
