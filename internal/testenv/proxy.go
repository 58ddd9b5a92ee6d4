package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is an in-process HTTP/1.1 reverse proxy in front of a registry
// (usually one from StartRegistry), started by StartProxy: an
// httputil.ReverseProxy behind a handler that takes the faults that answer
// instead of the registry, with hooks for the rest. It counts the
// bytes that go through it, logs every request, and injects faults on
// demand (error statuses, stalls, connections cut mid-upload), so that tests
// can watch and disturb what a client sends to a registry.
//
// Bodies are streamed in both directions, never buffered: blobs may be GBs.
// Headers are passed on unchanged (Authorization, WWW-Authenticate, Range,
// Content-Range, Retry-After, ...) except hop-by-hop ones, and absolute
// Location, Content-Location and Docker-Upload-UUID URLs that point at the
// registry are rewritten to point at the proxy, so that clients keep talking
// through it. Upstream requests carry the registry's host in Host.
type Proxy struct {
	// Addr is host:port, always 127.0.0.1:PORT.
	Addr string

	target    string // the registry, host:port
	srv       *http.Server
	transport *http.Transport
	rp        *httputil.ReverseProxy
	logw      *proxyLogWriter
	ctx       context.Context // canceled when the proxy closes
	cancel    context.CancelFunc
	inflight  sync.WaitGroup // handlers running; Add only under mu while !closed

	mu            sync.Mutex
	closed        bool
	faults        []*armedFault
	bytesUp       int64
	sessions      map[string]int64  // upload UUID -> request body bytes
	sessionDigest map[string]string // upload UUID -> digest of its final PUT
	digestBytes   map[string]int64  // digest -> bytes of monolithic POST ...?digest= uploads
	log           []*RequestLog
}

// RequestLog is one request that went through a Proxy, as Requests reports
// it.
type RequestLog struct {
	Method string
	// Path is the request's URL path; the query (which may hold upload
	// state tokens) is left out.
	Path string
	// Digest is the request's "digest" query parameter, if any (the final
	// PUT of a blob upload, or a monolithic POST).
	Digest string
	// Session is the blob upload session (UUID, the last path segment
	// after /blobs/uploads/), if the request belongs to one.
	Session string
	// Status is the status sent to the client, or 0 when none was sent
	// (the connection was cut, or the client went away first).
	Status int
	// BytesIn counts request body bytes forwarded to the registry.
	BytesIn int64
	// BytesOut counts response body bytes written to the client.
	BytesOut int64
	// Fault describes the injected fault that hit this request; "" if none.
	Fault string
	// Err says what went wrong while proxying; "" if nothing did.
	Err string
	// Done is set once the proxy has finished with the request.
	Done bool
}

// Fault is a misbehaviour that Proxy.Inject arms. It hits the next Times
// requests that match Method and PathContains, then disarms itself. A
// request is hit by at most one fault: the earliest armed one that matches.
// Within one fault, Stall comes first, then Status or ResetAfterBytes.
type Fault struct {
	// Method matches the request method (case-insensitively); "" matches any.
	Method string
	// PathContains matches requests whose URL path (without query)
	// contains it, e.g. "/blobs/uploads/"; "" matches any.
	PathContains string
	// Times is how many matching requests the fault hits; 0 means 1.
	Times int
	// Status, when non-zero, answers the request with this status without
	// forwarding it to the registry. 429 and 503 get a distribution-style
	// JSON error body (codes TOOMANYREQUESTS and UNAVAILABLE, which
	// clients treat as temporary); other statuses get a plain-text body,
	// so that clients judge them by the status alone.
	Status int
	// RetryAfter, when positive, is sent as a Retry-After header (seconds)
	// with Status.
	RetryAfter int
	// ResetAfterBytes, when positive, forwards the request but, once this
	// many request body bytes have been forwarded to the registry, cuts the
	// client's connection with a TCP reset (SO_LINGER 0, then close) and
	// aborts the upstream request, so the registry sees its client drop
	// mid-body. A request whose Content-Length is at most ResetAfterBytes
	// is forwarded untouched (the fault still counts it as hit). The count
	// is exact (the registry receives exactly ResetAfterBytes body bytes)
	// except for cuts within the first few KiB, which may sit in the
	// transport's 4 KiB write buffer when the connection is aborted.
	ResetAfterBytes int64
	// Stall holds the request this long before doing anything else. It
	// ends early, and the request is dropped, when the client goes away
	// (noticed only for requests without a body: Go's server watches the
	// connection once the body has been read) or the proxy closes.
	Stall time.Duration
	// Respond, when set, answers the request instead of the registry: a
	// registry that lies (a blob streamed past its size, a manifest of
	// its own). What it writes is counted in RequestLog.BytesOut, and its
	// writes fail once the client has gone away.
	Respond http.HandlerFunc
	// Header, when set, replaces these headers of the registry's answer
	// (a manifest served as application/octet-stream, say).
	Header http.Header
}

// String describes f for logs and RequestLog.Fault.
func (f Fault) String() string {
	m, path := f.Method, f.PathContains
	if m == "" {
		m = "*"
	}
	if path == "" {
		path = "*"
	} else {
		path = "*" + path + "*"
	}
	parts := []string{m + " " + path}
	if f.Stall > 0 {
		parts = append(parts, "stall="+f.Stall.String())
	}
	if f.Status != 0 {
		parts = append(parts, "status="+strconv.Itoa(f.Status))
	}
	if f.RetryAfter > 0 {
		parts = append(parts, "retry-after="+strconv.Itoa(f.RetryAfter))
	}
	if f.Respond != nil {
		parts = append(parts, "respond")
	}
	for k, v := range f.Header {
		parts = append(parts, k+"="+strings.Join(v, ","))
	}
	if f.ResetAfterBytes > 0 {
		parts = append(parts, "reset-after="+strconv.FormatInt(f.ResetAfterBytes, 10))
	}
	return strings.Join(parts, " ")
}

// armedFault is a Fault with its remaining hits.
type armedFault struct {
	f    Fault
	left int
}

func (a *armedFault) matches(r *http.Request) bool {
	if a.f.Method != "" && !strings.EqualFold(a.f.Method, r.Method) {
		return false
	}
	return strings.Contains(r.URL.Path, a.f.PathContains)
}

// proxyCopyBufSize is the buffer size for streaming response bodies.
const proxyCopyBufSize = 1 << 20

var proxyBufPool = sync.Pool{New: func() any { b := make([]byte, proxyCopyBufSize); return &b }}

// proxyCloseTimeout bounds the wait for handlers when the proxy closes.
const proxyCloseTimeout = 10 * time.Second

// StartProxy starts a reverse proxy on 127.0.0.1 (a free port) to target,
// a registry's "127.0.0.1:PORT" (Registry.Addr). It is closed in
// t.Cleanup: requests still running are aborted and waited for.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	if _, _, err := net.SplitHostPort(target); err != nil {
		t.Fatalf("testenv: StartProxy: target %q is not host:port: %v", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: proxy: %v", err)
	}
	var http1 http.Protocols
	http1.SetHTTP1(true)
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		Addr:   ln.Addr().String(),
		target: target,
		ctx:    ctx,
		cancel: cancel,
		logw:   &proxyLogWriter{t: t},
		transport: &http.Transport{
			Proxy:               nil, // never a proxy from the environment
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			DisableCompression:  true,
			Protocols:           &http1,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
		},
		sessions:      map[string]int64{},
		sessionDigest: map[string]string{},
		digestBytes:   map[string]int64{},
	}
	p.rp = p.newReverseProxy()
	p.srv = &http.Server{
		Handler:           p,
		Protocols:         &http1,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          log.New(p.logw, "testenv: proxy: ", 0),
	}
	go p.srv.Serve(ln)
	t.Cleanup(func() { p.close(t) })
	t.Logf("testenv: proxy on %s -> %s", p.Addr, target)
	return p
}

// URL returns the proxy's base URL, "http://127.0.0.1:PORT".
func (p *Proxy) URL() string {
	return "http://" + p.Addr
}

// Ref returns the reference of repo through the proxy:
// "127.0.0.1:PORT/repo". repo may carry a ":tag" or "@digest".
func (p *Proxy) Ref(repo string) string {
	return p.Addr + "/" + strings.TrimPrefix(repo, "/")
}

// Inject arms f. It may be called at any time, also while requests run.
func (p *Proxy) Inject(f Fault) {
	n := f.Times
	if n <= 0 {
		n = 1
	}
	p.mu.Lock()
	p.faults = append(p.faults, &armedFault{f: f, left: n})
	p.mu.Unlock()
}

// BytesUp returns the request body bytes forwarded to the registry, all
// requests together.
func (p *Proxy) BytesUp() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytesUp
}

// BytesUpFor returns the request body bytes forwarded for uploads of the
// blob digest ("sha256:..."): those of every upload session (POST, PATCH,
// PUT under /v2/*/blobs/uploads/<uuid>) whose final PUT carried
// ?digest=digest, plus those of monolithic POST .../blobs/uploads/?digest=
// uploads. Sessions are attributed once their PUT is seen: bytes of
// sessions that never got one (abandoned, or still running) count only in
// BytesUpSession.
func (p *Proxy) BytesUpFor(digest string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.digestBytes[digest]
	for uuid, d := range p.sessionDigest {
		if d == digest {
			n += p.sessions[uuid]
		}
	}
	return n
}

// BytesUpSession returns the request body bytes forwarded for the blob
// upload session uuid (the last path segment of the upload URL).
func (p *Proxy) BytesUpSession(uuid string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sessions[uuid]
}

// Requests returns the requests seen so far (since the last Reset), in the
// order they arrived. Requests still running are included with what they
// have done so far (Done false). A client may have read a whole response
// a moment before the proxy has counted its last bytes and set Done: wait
// for Done before relying on Status or BytesOut being final.
func (p *Proxy) Requests() []RequestLog {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]RequestLog, len(p.log))
	for i, e := range p.log {
		out[i] = *e
	}
	return out
}

// ClearFaults disarms every fault (requests already held stay held).
func (p *Proxy) ClearFaults() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = nil
}

// Reset clears the statistics and the request log. Armed faults stay.
// Requests running during Reset are counted partly.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytesUp = 0
	p.sessions = map[string]int64{}
	p.sessionDigest = map[string]string{}
	p.digestBytes = map[string]int64{}
	p.log = nil
}

// close stops the proxy: no new requests, running ones aborted and waited
// for, idle upstream connections closed.
func (p *Proxy) close(t testing.TB) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	if err := p.srv.Close(); err != nil {
		t.Logf("testenv: proxy %s: close: %v", p.Addr, err)
	}
	done := make(chan struct{})
	go func() {
		p.inflight.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(proxyCloseTimeout):
		t.Errorf("testenv: proxy %s: requests still running %v after close", p.Addr, proxyCloseTimeout)
	}
	p.transport.CloseIdleConnections()
	p.logw.stop()
}

// enter registers a running handler; false once the proxy is closed.
func (p *Proxy) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.inflight.Add(1)
	return true
}

// uploadSession returns the blob upload UUID of a request path, "" if the
// path is not under /blobs/uploads/ or names no session.
func uploadSession(path string) string {
	const marker = "/blobs/uploads/"
	i := strings.LastIndex(path, marker)
	if i < 0 || !strings.HasPrefix(path, "/v2/") {
		return ""
	}
	rest := strings.Trim(path[i+len(marker):], "/")
	if j := strings.LastIndexByte(rest, '/'); j >= 0 {
		rest = rest[j+1:]
	}
	return rest
}

// begin logs r, maps its upload session to a digest when it is a final
// PUT, and takes the fault that hits it, if any.
func (p *Proxy) begin(r *http.Request) (*RequestLog, *Fault) {
	e := &RequestLog{
		Method:  r.Method,
		Path:    r.URL.Path,
		Digest:  r.URL.Query().Get("digest"),
		Session: uploadSession(r.URL.Path),
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, e)
	if e.Session != "" && e.Digest != "" && r.Method == http.MethodPut {
		p.sessionDigest[e.Session] = e.Digest
	}
	for i, a := range p.faults {
		if !a.matches(r) {
			continue
		}
		a.left--
		if a.left <= 0 {
			p.faults = append(p.faults[:i:i], p.faults[i+1:]...)
		}
		f := a.f
		e.Fault = f.String()
		return e, &f
	}
	return e, nil
}

// update changes e under the lock.
func (p *Proxy) update(e *RequestLog, fn func(e *RequestLog)) {
	p.mu.Lock()
	fn(e)
	p.mu.Unlock()
}

func (p *Proxy) setErr(e *RequestLog, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.update(e, func(e *RequestLog) {
		if e.Err == "" {
			e.Err = msg
		} else {
			e.Err += "; " + msg
		}
	})
}

// countUp records n request body bytes of b forwarded upstream.
func (p *Proxy) countUp(b *upBody, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytesUp += int64(n)
	b.entry.BytesIn += int64(n)
	switch {
	case b.session != "":
		p.sessions[b.session] += int64(n)
	case b.digest != "":
		p.digestBytes[b.digest] += int64(n)
	}
}

var (
	errProxyClosed = errors.New("testenv: proxy closed")
	errCut         = errors.New("testenv: proxy cut the client connection (injected fault)")
	errProxyDone   = errors.New("testenv: proxy finished the request")
)

// ServeHTTP proxies one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.enter() {
		http.Error(w, "testenv proxy: closed", http.StatusServiceUnavailable)
		return
	}
	defer p.inflight.Done()
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(errProxyDone)
	defer context.AfterFunc(p.ctx, func() { cancel(errProxyClosed) })()

	e, f := p.begin(r)
	defer p.update(e, func(e *RequestLog) { e.Done = true })

	if f != nil && f.Stall > 0 {
		timer := time.NewTimer(f.Stall)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			p.setErr(e, "stall ended early: %v", context.Cause(ctx))
			return
		}
	}
	if f != nil && f.Status != 0 {
		p.respondFault(w, e, f)
		return
	}
	if f != nil && f.Respond != nil {
		f.Respond(&countResponseWriter{ResponseWriter: w, c: countWriter{w: w, p: p, e: e}}, r.WithContext(ctx))
		return
	}

	in := r.WithContext(context.WithValue(ctx, forwardKey{}, &forward{e: e, f: f}))
	var body *upBody
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		body = &upBody{
			p:       p,
			r:       r.Body,
			entry:   e,
			session: e.Session,
			ctx:     ctx,
		}
		if e.Session == "" && r.Method == http.MethodPost {
			body.digest = e.Digest
		}
		if f != nil && f.ResetAfterBytes > 0 && (r.ContentLength < 0 || r.ContentLength > f.ResetAfterBytes) {
			body.limit = f.ResetAfterBytes
			body.cut = make(chan struct{})
		}
		in.Body = body
	}
	// The transport may go on reading the body after RoundTrip returns (a
	// registry that answers before reading it all): ReverseProxy hands it
	// a body that refuses reads once the handler is done, and the ctx
	// upBody reads under ends then too.

	// A connection cut happens on another goroutine while the round trip
	// waits for a response that will never come.
	fw := in.Context().Value(forwardKey{}).(*forward)
	var cutDone, rtDone chan struct{}
	if body != nil && body.cut != nil {
		cutDone, rtDone = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(cutDone)
			select {
			case <-body.cut:
				fw.hijacked.Store(p.cutClient(w, e))
				cancel(errCut)
			case <-rtDone:
			}
		}()
		defer func() {
			close(rtDone)
			<-cutDone
		}()
	}
	// ReverseProxy aborts the handler (panic(http.ErrAbortHandler), which
	// Go's server takes quietly) when the response body cannot be copied.
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				p.setErr(e, "response body: copy failed, client connection aborted")
			}
			panic(v)
		}
	}()
	p.rp.ServeHTTP(&countResponseWriter{ResponseWriter: w, c: countWriter{w: w, p: p, e: e}}, in)
}

// forward is what the ReverseProxy's hooks need to know of one request:
// its log entry, its fault, and whether the fault took its connection.
type forward struct {
	e        *RequestLog
	f        *Fault
	hijacked atomic.Bool
}

type forwardKey struct{}

// newReverseProxy is httputil.ReverseProxy to p.target over p.transport,
// with the hooks that log and disturb what it forwards: the request body
// is counted (and cut, for ResetAfterBytes) by upBody, the response body
// by countResponseWriter; redirects to the registry are pointed at the
// proxy, and a fault's Header replaces the registry's.
func (p *Proxy) newReverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = p.target
			pr.Out.Host = ""
			// Go's server answers Expect: 100-continue itself when the
			// body is first read; the registry need not see it.
			pr.Out.Header.Del("Expect")
		},
		Transport:  p.transport,
		BufferPool: proxyBuffers{},
		ErrorLog:   log.New(p.logw, "testenv: proxy: ", 0),
		ModifyResponse: func(resp *http.Response) error {
			fw := resp.Request.Context().Value(forwardKey{}).(*forward)
			if fw.f != nil {
				for k, v := range fw.f.Header {
					resp.Header[http.CanonicalHeaderKey(k)] = v
				}
			}
			for _, k := range []string{"Location", "Content-Location", "Docker-Upload-Uuid"} {
				for i, v := range resp.Header[k] {
					resp.Header[k][i] = p.rewriteURL(v)
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			fw := r.Context().Value(forwardKey{}).(*forward)
			switch {
			case fw.hijacked.Load():
			case r.Context().Err() != nil:
				p.setErr(fw.e, "upstream request aborted: %v (%v)", context.Cause(r.Context()), err)
			default:
				p.setErr(fw.e, "upstream: %v", err)
				http.Error(w, "testenv proxy: "+err.Error(), http.StatusBadGateway)
			}
		},
	}
}

// proxyBuffers lends the ReverseProxy proxyBufPool's buffers.
type proxyBuffers struct{}

func (proxyBuffers) Get() []byte  { return *proxyBufPool.Get().(*[]byte) }
func (proxyBuffers) Put(b []byte) { proxyBufPool.Put(&b) }

// respondFault answers r with f.Status without forwarding it.
func (p *Proxy) respondFault(w http.ResponseWriter, e *RequestLog, f *Fault) {
	h := w.Header()
	if f.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(f.RetryAfter))
	}
	msg := fmt.Sprintf("testenv proxy: injected fault (%s)", f)
	var body string
	switch f.Status {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		code := "UNAVAILABLE"
		if f.Status == http.StatusTooManyRequests {
			code = "TOOMANYREQUESTS"
		}
		h.Set("Content-Type", "application/json; charset=utf-8")
		body = fmt.Sprintf(`{"errors":[{"code":%q,"message":%q}]}`+"\n", code, msg)
	default:
		h.Set("Content-Type", "text/plain; charset=utf-8")
		body = msg + "\n"
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(f.Status)
	n, _ := io.WriteString(w, body)
	p.update(e, func(e *RequestLog) {
		e.Status = f.Status
		e.BytesOut += int64(n)
	})
}

// cutClient hijacks the client's connection and closes it with SO_LINGER 0,
// so the client gets a TCP reset. It reports whether the connection was
// taken over (and the handler must no longer use w).
func (p *Proxy) cutClient(w http.ResponseWriter, e *RequestLog) bool {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		p.setErr(e, "cutting the client connection: hijack: %v", err)
		return false
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		if err := tc.SetLinger(0); err != nil {
			p.setErr(e, "SetLinger(0): %v", err)
		}
	}
	conn.Close()
	p.update(e, func(e *RequestLog) {
		e.Err = fmt.Sprintf("client connection reset after %d request body bytes (injected fault)", e.BytesIn)
	})
	return true
}

// rewriteURL points an absolute URL at the registry to the proxy instead.
func (p *Proxy) rewriteURL(v string) string {
	for _, scheme := range []string{"http://", "https://"} {
		prefix := scheme + p.target
		if len(v) < len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
			continue
		}
		rest := v[len(prefix):]
		if rest == "" || rest[0] == '/' || rest[0] == '?' || rest[0] == '#' {
			return scheme + p.Addr + rest
		}
	}
	return v
}

// upBody is the request body sent upstream: it reads the client's body,
// counts what the transport takes, and implements ResetAfterBytes.
type upBody struct {
	p       *Proxy
	r       io.Reader
	entry   *RequestLog
	session string // upload session the bytes belong to
	digest  string // or: digest of a monolithic upload
	ctx     context.Context
	n       int64 // bytes handed to the transport

	// limit > 0: once limit bytes have been handed over and the transport
	// asks for more, close cut and block until ctx ends.
	limit   int64
	cut     chan struct{}
	cutOnce sync.Once
}

func (b *upBody) Read(buf []byte) (int, error) {
	if b.limit > 0 {
		if b.n >= b.limit {
			// The transport writes what each Read returned before asking
			// for more (Go's request writer copies the body straight to
			// the connection once its 4 KiB header buffer is flushed), so
			// all limit bytes have reached the registry's socket.
			b.cutOnce.Do(func() { close(b.cut) })
			<-b.ctx.Done()
			return 0, context.Cause(b.ctx)
		}
		if rem := b.limit - b.n; int64(len(buf)) > rem {
			buf = buf[:rem]
		}
	}
	if err := b.ctx.Err(); err != nil {
		return 0, context.Cause(b.ctx)
	}
	n, err := b.r.Read(buf)
	if n > 0 {
		b.n += int64(n)
		b.p.countUp(b, n)
	}
	return n, err
}

// Close does nothing: Go's server closes the client's body itself when
// the handler returns.
func (b *upBody) Close() error { return nil }

// countWriter counts response body bytes written to the client.
type countWriter struct {
	w io.Writer
	p *Proxy
	e *RequestLog
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	if n > 0 {
		c.p.update(c.e, func(e *RequestLog) { e.BytesOut += int64(n) })
	}
	return n, err
}

// countResponseWriter is a ResponseWriter whose body bytes are counted.
type countResponseWriter struct {
	http.ResponseWriter
	c countWriter
}

func (w *countResponseWriter) WriteHeader(code int) {
	w.c.p.update(w.c.e, func(e *RequestLog) { e.Status = code })
	w.ResponseWriter.WriteHeader(code)
}

func (w *countResponseWriter) Write(b []byte) (int, error) { return w.c.Write(b) }

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *countResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush sends what was written so far (a streamed body has no Content-Length).
func (w *countResponseWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// proxyLogWriter sends the proxy server's error log to the test's log until
// the proxy closes (t.Log after the test ends would panic).
type proxyLogWriter struct {
	mu      sync.Mutex
	t       testing.TB
	stopped bool
}

func (l *proxyLogWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped {
		l.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

func (l *proxyLogWriter) stop() {
	l.mu.Lock()
	l.stopped = true
	l.mu.Unlock()
}
