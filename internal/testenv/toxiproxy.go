package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2/client"
)

// Toxiproxy (github.com/Shopify/toxiproxy) is a TCP proxy whose faults
// ("toxics": latency, bandwidth limits, resets, stalls, sliced segments) are
// set through an HTTP API while connections run. It sits at the TCP level,
// below HTTP, so it disturbs what Proxy (proxy.go) cannot: the stream itself.
//
// toxiproxy-server is built from source at the version tools/toxiproxy/go.mod
// pins, into the same cache as the peer tools (see PeerBinary), as
// toxiproxy-server-VERSION; .ci/install-deps.sh pre-builds it.
const (
	// ToxiproxyModuleDir is the module that pins toxiproxy, relative to the
	// repository root.
	ToxiproxyModuleDir = "tools/toxiproxy"
	toxiproxyModule    = "github.com/Shopify/toxiproxy/v2"
	toxiproxyPkg       = toxiproxyModule + "/cmd/server"
	// toxiproxyVersion is used when tools/toxiproxy/go.mod cannot be found
	// (a cached binary of this version may still exist). Keep it equal to
	// tools/toxiproxy/go.mod (TestToxiproxyVersionPinned checks).
	toxiproxyVersion = "v2.12.0"
)

// toxiproxyStartTimeout bounds the wait for the API to answer.
const toxiproxyStartTimeout = 30 * time.Second

var toxiproxyBuild peerBuild

// ToxiproxyBinary returns the path of toxiproxy-server at the pinned version,
// building it (once per process, once per machine: a lock file and a rename)
// from tools/toxiproxy when the cache lacks it. A missing go command or
// module skips the test (fails it under MODELCAR_E2E=1); a failing build
// fails it.
func ToxiproxyBinary(t testing.TB) string {
	t.Helper()
	b := &toxiproxyBuild
	b.once.Do(func() { b.path, b.skip, b.err = findOrBuildToxiproxy(t) })
	if b.skip != "" {
		missing(t, b.skip)
	}
	if b.err != nil {
		t.Fatalf("testenv: %v", b.err)
	}
	return b.path
}

// ToxiproxyBuildArgs are the `go build` arguments (after "build") that make
// toxiproxy-server at version into out; .ci/install-deps.sh uses the same.
func ToxiproxyBuildArgs(version, out string) []string {
	return []string{"build", "-trimpath", "-ldflags", "-X " + toxiproxyModule + ".Version=" + version, "-o", out, toxiproxyPkg}
}

// findToxiproxyModule returns tools/toxiproxy, found as findToolsModule finds
// tools.
func findToxiproxyModule() (string, error) {
	tools, err := findToolsModule()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(filepath.Dir(tools), ToxiproxyModuleDir)
	if fi, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil || !fi.Mode().IsRegular() {
		return "", fmt.Errorf("no %s/go.mod beside %s", ToxiproxyModuleDir, tools)
	}
	return dir, nil
}

func findOrBuildToxiproxy(t testing.TB) (path, skip string, err error) {
	t.Helper()
	return buildPinned(t, "toxiproxy-server", toxiproxyModule, toxiproxyVersion, findToxiproxyModule, ToxiproxyBuildArgs)
}

// Toxiproxy is a toxiproxy-server started by StartToxiproxy: its API listens
// on 127.0.0.1, and so does every proxy it opens.
type Toxiproxy struct {
	// API is the base URL of the HTTP API, http://127.0.0.1:PORT.
	API string
	// LogFile receives the server's log (JSON lines).
	LogFile string

	bin  string
	dir  string
	proc *process
	// client is the API's own Go client, at the server's version. Its
	// requests go to 127.0.0.1, which Go never sends through an environment
	// proxy.
	client *toxiproxy.Client
}

// StartToxiproxy starts toxiproxy-server with its API on a free 127.0.0.1
// port and a fixed random seed (toxicity and jitter draws repeat from run to
// run), waits until the API answers, and stops it by PID (SIGTERM, then
// SIGKILL) in cleanup. The log's tail goes to t.Log when the test failed.
func StartToxiproxy(t testing.TB) *Toxiproxy {
	t.Helper()
	bin := ToxiproxyBinary(t)
	dir := shortTempDir(t, "mc-toxi-")
	s := &Toxiproxy{
		LogFile: filepath.Join(dir, "toxiproxy.log"),
		bin:     bin,
		dir:     dir,
	}
	cleanupServiceDir(t, "toxiproxy", dir, s.LogFile, 40)
	t.Cleanup(func() { s.stop(t) })
	const attempts = 3
	for attempt := 1; ; attempt++ {
		port := freeLoopbackPort(t)
		err := s.start(t, port)
		if err == nil {
			return s
		}
		if attempt < attempts && strings.Contains(tailFile(s.LogFile, 20), "address already in use") {
			t.Logf("testenv: toxiproxy port %d was taken; retrying on another port", port)
			continue
		}
		t.Fatalf("testenv: %v\n%s", err, tailFile(s.LogFile, 40))
	}
}

func (s *Toxiproxy) start(t testing.TB, port int) error {
	t.Helper()
	cmd := exec.Command(s.bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port), "-seed", "1")
	cmd.Env = append(os.Environ(), "LOG_LEVEL=info")
	cmd.Dir = s.dir
	p, err := startProcess("toxiproxy-server", cmd, s.LogFile, "")
	if err != nil {
		return err
	}
	p.quiet = true
	s.proc = p
	s.API = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.client = toxiproxy.NewClient(s.API)
	begin := time.Now()
	for {
		if p.exited() {
			return fmt.Errorf("toxiproxy-server (pid %d) exited during startup: %v", p.pid, p.err)
		}
		v, err := s.client.Version()
		if err == nil {
			t.Logf("testenv: toxiproxy-server %s pid %d, API %s (ready in %v)", strings.TrimSpace(string(v)), p.pid, s.API, time.Since(begin).Round(time.Millisecond))
			return nil
		}
		if time.Since(begin) > toxiproxyStartTimeout {
			s.stop(t)
			return fmt.Errorf("toxiproxy-server (pid %d) did not answer within %v: %v", p.pid, toxiproxyStartTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop signals the PID it started, nothing else.
func (s *Toxiproxy) stop(t testing.TB) {
	p := s.proc
	if p == nil {
		return
	}
	s.proc = nil
	p.stop(t, 10*time.Second)
}

// ToxicProxy is one proxy of a Toxiproxy: a listener on 127.0.0.1 whose
// connections are piped to Upstream through the proxy's toxics.
type ToxicProxy struct {
	Name string
	// Addr is host:port, always 127.0.0.1:PORT.
	Addr string
	// Upstream is what connections are piped to (a Registry's Addr).
	Upstream string

	p *toxiproxy.Proxy
}

// Proxy opens a proxy named name on a free 127.0.0.1 port to upstream
// (host:port, usually a Registry's Addr). It starts with no toxics; it is
// deleted in cleanup.
func (s *Toxiproxy) Proxy(t testing.TB, name, upstream string) *ToxicProxy {
	t.Helper()
	if _, _, err := net.SplitHostPort(upstream); err != nil {
		t.Fatalf("testenv: toxiproxy: upstream %q is not host:port: %v", upstream, err)
	}
	got, err := s.client.CreateProxy(name, "127.0.0.1:0", upstream)
	if err != nil {
		t.Fatalf("testenv: creating toxiproxy proxy %s: %v", name, err)
	}
	host, port, err := net.SplitHostPort(got.Listen)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("testenv: toxiproxy proxy %s listens on %q, want 127.0.0.1:PORT", name, got.Listen)
	}
	p := &ToxicProxy{Name: name, Addr: got.Listen, Upstream: upstream, p: got}
	t.Cleanup(func() {
		if s.proc != nil {
			got.Delete()
		}
	})
	return p
}

// Ref returns the reference of repo through the proxy: "127.0.0.1:PORT/repo".
func (p *ToxicProxy) Ref(repo string) string {
	return p.Addr + "/" + strings.TrimPrefix(repo, "/")
}

// SetEnabled enables or disables the proxy. Disabling closes every
// connection and refuses new ones (the registry seems gone).
func (p *ToxicProxy) SetEnabled(on bool) error {
	if on {
		return p.p.Enable()
	}
	return p.p.Disable()
}

// Toxic is one fault of a ToxicProxy, as the toxiproxy API describes it
// (the client's Toxic with typed attributes).
type Toxic struct {
	// Name identifies the toxic in its proxy; "" lets toxiproxy name it
	// TYPE_STREAM.
	Name string `json:"name"`
	// Type is latency, bandwidth, reset_peer, timeout, slicer,
	// limit_data or slow_close.
	Type string `json:"type"`
	// Stream is "upstream" (client to registry: uploads) or "downstream"
	// (registry to client: downloads).
	Stream string `json:"stream"`
	// Toxicity is the chance (0 to 1) that a connection is affected; it is
	// sent as is, so 0 arms a toxic that does nothing until raised (see
	// Arm). The constructors set 1.
	Toxicity float32 `json:"toxicity"`
	// Attributes are the type's settings (milliseconds, KB/s, bytes).
	Attributes map[string]int64 `json:"attributes"`
}

// The streams of a connection.
const (
	Upstream   = "upstream"
	Downstream = "downstream"
)

// Latency delays each piece of data on stream by ms ± jitter milliseconds.
func Latency(stream string, ms, jitter int64) Toxic {
	return Toxic{Type: "latency", Stream: stream, Toxicity: 1, Attributes: map[string]int64{"latency": ms, "jitter": jitter}}
}

// Bandwidth limits stream to kbps kilobytes per second (per connection).
func Bandwidth(stream string, kbps int64) Toxic {
	return Toxic{Type: "bandwidth", Stream: stream, Toxicity: 1, Attributes: map[string]int64{"rate": kbps}}
}

// ResetPeer resets connections (TCP RST: SO_LINGER 0) ms milliseconds after
// the first data on stream arrives; that data is dropped.
func ResetPeer(stream string, ms int64) Toxic {
	return Toxic{Type: "reset_peer", Stream: stream, Toxicity: 1, Attributes: map[string]int64{"timeout": ms}}
}

// Timeout stalls stream: data is dropped, and the connection is closed once
// no data has arrived for ms milliseconds (0: never closed; the connection
// hangs until the toxic is removed).
func Timeout(stream string, ms int64) Toxic {
	return Toxic{Type: "timeout", Stream: stream, Toxicity: 1, Attributes: map[string]int64{"timeout": ms}}
}

// Slicer cuts stream into pieces of avg ± variation bytes, delayUs
// microseconds apart.
func Slicer(stream string, avg, variation, delayUs int64) Toxic {
	return Toxic{Type: "slicer", Stream: stream, Toxicity: 1, Attributes: map[string]int64{"average_size": avg, "size_variation": variation, "delay": delayUs}}
}

// LimitData closes connections (FIN) once n bytes have passed on stream.
func LimitData(stream string, n int64) Toxic {
	return Toxic{Type: "limit_data", Stream: stream, Toxicity: 1, Attributes: map[string]int64{"bytes": n}}
}

// Add adds a toxic; it applies to open connections too.
func (p *ToxicProxy) Add(tx Toxic) error {
	attrs := toxiproxy.Attributes{}
	for k, v := range tx.Attributes {
		attrs[k] = v
	}
	_, err := p.p.AddToxic(tx.Name, tx.Type, tx.Stream, tx.Toxicity, attrs)
	return err
}

// SetToxicity changes the toxicity of the toxic name (0: inert, 1: always).
// Connections draw again whether they are affected.
func (p *ToxicProxy) SetToxicity(name string, v float32) error {
	_, err := p.p.UpdateToxic(name, v, nil) // nil attributes: the server keeps the toxic's own
	return err
}

// Remove removes the toxic name.
func (p *ToxicProxy) Remove(name string) error {
	return p.p.RemoveToxic(name)
}

// Toxics lists the proxy's toxics.
func (p *ToxicProxy) Toxics() ([]Toxic, error) {
	txs, err := p.p.Toxics()
	if err != nil {
		return nil, err
	}
	out := make([]Toxic, 0, len(txs))
	for _, tx := range txs {
		attrs := map[string]int64{}
		for k, v := range tx.Attributes {
			if f, ok := v.(float64); ok { // JSON numbers
				attrs[k] = int64(f)
			}
		}
		out = append(out, Toxic{Name: tx.Name, Type: tx.Type, Stream: tx.Stream, Toxicity: tx.Toxicity, Attributes: attrs})
	}
	return out, nil
}

// RemoveAll removes every toxic of the proxy. toxiproxy's control API can
// give up on a call after its 25 s handler timeout while a toxic holds a
// link (Shopify/toxiproxy#558: an HTML "Timeout" page, or a 503); the links
// drain meanwhile, so the call is made again, three times at most.
func (p *ToxicProxy) RemoveAll() error {
	var err error
	for range 3 {
		if err = p.removeAll(); err == nil {
			return nil
		}
	}
	return err
}

func (p *ToxicProxy) removeAll() error {
	txs, err := p.Toxics()
	if err != nil {
		return err
	}
	var errs []error
	for _, tx := range txs {
		errs = append(errs, p.Remove(tx.Name))
	}
	return errors.Join(errs...)
}

// Trip is a toxic armed at toxicity 0, raised to 1 for a while when fired:
// a fault that strikes at a moment the test picks (after so many bytes,
// from a progress callback) rather than at once.
type Trip struct {
	p    *ToxicProxy
	name string
	down bool
	hold time.Duration

	mu     sync.Mutex
	fired  bool
	err    error
	lowerd chan struct{}
}

// Arm adds tx at toxicity 0 and returns its Trip. Arm before the traffic
// to disturb starts: toxiproxy makes a connection close with a TCP reset
// only when a reset_peer toxic was present as it opened. Once fired, the
// toxic stays for hold, then is removed so that retries get through.
//
// Removed, not lowered to toxicity 0: a timeout toxic drops the data it
// stalls, and lowered it would let the connection go on with a hole in
// its byte stream, which TCP never does; removed, it closes the
// connections it stalled.
func (p *ToxicProxy) Arm(tx Toxic, hold time.Duration) (*Trip, error) {
	if tx.Name == "" {
		tx.Name = "trip-" + tx.Type + "-" + tx.Stream
	}
	tx.Toxicity = 0
	if err := p.Add(tx); err != nil {
		return nil, err
	}
	return &Trip{p: p, name: tx.Name, down: tx.Stream == Downstream, hold: hold, lowerd: make(chan struct{})}, nil
}

// Fire raises the toxic now (once; later calls do nothing) and schedules
// its removal after the hold. It returns once the toxic is raised.
func (tr *Trip) Fire() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.fired {
		return
	}
	tr.fired = true
	if err := tr.p.SetToxicity(tr.name, 1); err != nil {
		tr.err = err
		close(tr.lowerd)
		return
	}
	time.AfterFunc(tr.hold, func() {
		err := tr.p.Remove(tr.name)
		tr.mu.Lock()
		tr.err = errors.Join(tr.err, err)
		tr.mu.Unlock()
		close(tr.lowerd)
	})
}

// After returns a byte counter for progress callbacks: once the counts
// passed to it add up to n, it fires the trip. An upstream trip fires
// before the counter returns, so the rest of the data in flight meets it;
// a downstream one fires in another goroutine, because toxiproxy raises a
// toxic only after handing on the data it holds, which needs the caller to
// go on reading. Safe for concurrent use.
func (tr *Trip) After(n int64) func(delta int64) {
	var mu sync.Mutex
	var total int64
	return func(delta int64) {
		mu.Lock()
		total += delta
		hit := total >= n
		mu.Unlock()
		if !hit {
			return
		}
		if tr.down {
			go tr.Fire()
		} else {
			tr.Fire()
		}
	}
}

// Fired reports whether the trip was fired.
func (tr *Trip) Fired() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.fired
}

// Wait waits until a fired trip's toxic has been removed (at most timeout)
// and returns any API error of its raising and removal. On an unfired
// trip it returns nil at once.
func (tr *Trip) Wait(timeout time.Duration) error {
	if !tr.Fired() {
		return nil
	}
	select {
	case <-tr.lowerd:
	case <-time.After(timeout):
		return fmt.Errorf("toxic %s still raised after %v", tr.name, timeout)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.err
}
