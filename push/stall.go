package push

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"oras.land/oras-go/v2/registry/remote/retry"
)

// Stalls. A registry connection on which no byte moves, either way, for
// the idle timeout (WithIdleTimeout) fails its request with a *StallError,
// whatever the request was doing: connecting, sending headers or a body,
// waiting for the answer, or reading it. Bytes moving either way restart
// the clock, on Linux also those the kernel alone sees move (the tail of a
// body draining from the socket buffer), and the clock of a Read or Write
// starts no earlier than the call: a slow link that keeps moving, or a
// connection that waited in the pool, is no stall. The stalled connection
// is closed, and so are the idle ones beside it in the pool, so that what
// is re-sent goes out on a new connection. Connecting counts as a phase:
// its timeout is the idle timeout (30 s at most). Over HTTP/2, requests
// share their connection, and so its clock. A request body that our side
// produces slowly (a mirror's source, pack's compressor) leaves the
// connection quiet too; when that source is a registry, its own
// connection's stall is noticed first.
//
// What then happens, and how long it may take:
//
//   - any request is sent at most twice: net/http re-sends a GET or HEAD
//     that stalled on a kept-alive connection, stallRetry any other request
//     of the registry API (manifests, tags, mounts, existence checks, the
//     start of a download) once, 250 ms later; so each request that meets
//     a stall for good fails after at most 2 × idle + 250 ms;
//   - a blob upload's own requests (POST, PATCH, status GET, PUT) are not
//     re-sent by stallRetry; the uploader asks the registry what it holds
//     and resumes, and gives up after WithRetries (default 6) failed
//     requests in a row that moved the upload no further, with backoffs of
//     0.2 s doubling up to 5 s (11.2 s in all for 6) in between;
//   - a download that stalls mid-body is not re-sent: a pull fails naming
//     the layer (a re-run resumes from the layers in place); a mirror's
//     uploader re-reads its source from the offset the registry holds.
//
// Between the failures of an upload the other requests are quick, so a
// path that stalls for good ends a pull within 2 × idle + 250 ms, and a
// push or a mirror within (retries+1) × (2 × idle + 250 ms) plus the
// backoffs; an upload's own requests mostly fail after one idle timeout,
// so a push typically gives up after (retries+1) × idle plus the backoffs
// (14 min 11 s with the defaults, 2 min and 6 retries).

// StallError is the error of a request whose registry connection moved no
// byte, either way, for the idle timeout, or could not be set up within
// the dial timeout (the idle timeout, at most 30 s).
type StallError struct {
	// Idle is the timeout that ran out.
	Idle time.Duration
	// Addr is the address being connected to, when connecting stalled.
	Addr string
}

func (e *StallError) Error() string {
	if e.Addr != "" {
		return "connecting to " + e.Addr + ": no data for " + seconds(e.Idle)
	}
	return "connection stalled: no data for " + seconds(e.Idle)
}

// Timeout reports true: a StallError is a net.Error timeout.
func (e *StallError) Timeout() bool { return true }

// Temporary reports true (net.Error): a new connection may do better.
func (e *StallError) Temporary() bool { return true }

// seconds formats d as "120s", "1s", "0.25s".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// dialTimeout bounds connecting: 30 s, or the idle timeout if shorter.
func dialTimeout(idle time.Duration) time.Duration {
	if idle > 0 {
		return min(30*time.Second, idle)
	}
	return 30 * time.Second
}

// baseTransport is the HTTP transport under every registry client: its
// connections fail a request after idle of silence (0: never).
func baseTransport(idle time.Duration, insecure bool) *http.Transport {
	base := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: dialTimeout(idle), KeepAlive: 30 * time.Second}
	base.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialer.DialContext(ctx, network, addr)
		var ne net.Error
		if err != nil && ctx.Err() == nil && errors.As(err, &ne) && ne.Timeout() {
			return nil, &StallError{Idle: dialer.Timeout, Addr: addr}
		}
		if err != nil {
			return nil, err
		}
		// After a stall, kept-alive connections are suspect: net/http
		// would re-send a GET on each in turn.
		return newIdleConn(c, idle, base.CloseIdleConnections), nil
	}
	if idle > 0 {
		base.TLSHandshakeTimeout = min(base.TLSHandshakeTimeout, idle)
	}
	if insecure {
		base.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	return base
}

// idleConn fails a Read or Write once the connection has moved no byte,
// either way, for idle since the later of its last byte and the start of
// that Read or Write. The two directions share the clock: the response
// wait of a request whose body is still being sent does not time out, and
// neither does a body sent while the answer is awaited. On Linux, bytes the
// kernel sees acknowledged or received while the application moves none
// count too (tcpProgress): the tail of a request body draining from the
// socket buffer to a slow peer is no stall.
type idleConn struct {
	net.Conn
	idle    time.Duration
	onStall func()
	last    atomic.Int64 // UnixNano of the last byte moved, either way
	app     atomic.Int64 // UnixNano of the last byte the application moved
	// stalled is set once a stall is found; the other direction's
	// operations, failing as the connection closes, report it too.
	stalled atomic.Pointer[StallError]

	mu     sync.Mutex
	kern   uint64 // tcpProgress at kernAt
	kernAt time.Time
}

func newIdleConn(c net.Conn, idle time.Duration, onStall func()) net.Conn {
	if idle <= 0 {
		return c
	}
	ic := &idleConn{Conn: c, idle: idle, onStall: onStall}
	ic.moved()
	return ic
}

func (c *idleConn) moved() {
	now := time.Now().UnixNano()
	c.app.Store(now)
	c.last.Store(now)
}

// quietUntil is when an operation that started at start has seen idle of
// silence.
func (c *idleConn) quietUntil(start time.Time) time.Time {
	last := time.Unix(0, c.last.Load())
	if start.After(last) {
		last = start
	}
	return last.Add(c.idle)
}

// tick is how often a blocked operation looks at the kernel's counters.
func (c *idleConn) tick() time.Duration { return max(c.idle/8, 10*time.Millisecond) }

// kernelTick samples tcpProgress. Bytes the kernel moved since the last
// sample count as the connection moving now, unless the application moved
// bytes since then (which explain them).
func (c *idleConn) kernelTick() {
	n, ok := tcpProgress(c.Conn)
	if !ok {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.kernAt.IsZero() && n != c.kern && c.app.Load() < c.kernAt.UnixNano() {
		c.last.Store(now.UnixNano())
	}
	c.kern, c.kernAt = n, now
}

// wait runs op (one Read or Write) under the idle deadline until it moves
// bytes, fails otherwise, or the connection has been quiet for idle.
func (c *idleConn) wait(start time.Time, setDeadline func(time.Time) error, op func() (int, error)) (int, error) {
	for {
		deadline := c.quietUntil(start)
		if next := time.Now().Add(c.tick()); next.Before(deadline) {
			deadline = next
		}
		if err := setDeadline(deadline); err != nil {
			return 0, c.failed(err)
		}
		n, err := op()
		if n > 0 {
			c.moved()
		}
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, c.failed(err)
		}
		if n > 0 {
			return n, nil // the deadline struck after some bytes: not quiet
		}
		c.kernelTick()
		if time.Now().Before(c.quietUntil(start)) {
			continue // not quiet for idle yet, or the other direction moved
		}
		if c.stalled.CompareAndSwap(nil, &StallError{Idle: c.idle}) && c.onStall != nil {
			c.onStall()
		}
		return 0, c.stalled.Load()
	}
}

// failed is err, or the stall that made the connection close under it.
func (c *idleConn) failed(err error) error {
	if se := c.stalled.Load(); se != nil {
		return se
	}
	return err
}

func (c *idleConn) Read(p []byte) (int, error) {
	return c.wait(time.Now(), c.Conn.SetReadDeadline, func() (int, error) { return c.Conn.Read(p) })
}

func (c *idleConn) Write(p []byte) (int, error) {
	start, done := time.Now(), 0
	for done < len(p) {
		n, err := c.wait(start, c.Conn.SetWriteDeadline, func() (int, error) { return c.Conn.Write(p[done:]) })
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// retryPolicy is oras-go's default (429, 408, 5xx, resets: up to 5
// retries, 0.2 to 3 s apart) except that it never re-sends a request that
// timed out (a stall, a dial timeout): stallRetry does that once for the
// registry API, the uploader resumes its own. oras-go's default re-sent
// each timed-out request 5 times, on top of the uploader's retries.
type retryPolicy struct{}

func (retryPolicy) Retry(attempt int, resp *http.Response, err error) (time.Duration, error) {
	if err != nil && isTimeout(err) {
		return -1, nil
	}
	return retry.DefaultPolicy.Retry(attempt, resp, err)
}

// isTimeout reports a stall, a dial or TLS handshake timeout: what
// net.Error calls a timeout, except the end of the caller's context.
func isTimeout(err error) bool {
	var se *StallError
	if errors.As(err, &se) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// stallRetryWait is how long stallRetry waits before re-sending.
const stallRetryWait = 250 * time.Millisecond

// stallRetry re-sends a request that timed out once, stallRetryWait later,
// unless net/http already sent it twice (it re-sends a GET or HEAD that
// failed on a kept-alive connection) or its body cannot be re-read: no
// request is sent more than twice.
type stallRetry struct{ next http.RoundTripper }

func (s stallRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	var conns atomic.Int32
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns.Add(1) }}
	ctx := req.Context()
	resp, err := s.next.RoundTrip(req.WithContext(httptrace.WithClientTrace(ctx, trace)))
	if err == nil || !isTimeout(err) || conns.Load() >= 2 || ctx.Err() != nil {
		return resp, err
	}
	again := req.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return resp, err
		}
		body, berr := req.GetBody()
		if berr != nil {
			return resp, err
		}
		again.Body = body
	}
	if serr := sleepCtx(ctx, stallRetryWait); serr != nil {
		return nil, err
	}
	return s.next.RoundTrip(again)
}

// registryTransports are the transports of the registry-API client and of
// the uploader's over base.
func registryTransports(base http.RoundTripper) (api, upload http.RoundTripper) {
	policy := func() retry.Policy { return retryPolicy{} }
	return &retry.Transport{Base: stallRetry{next: base}, Policy: policy}, &retry.Transport{Base: base, Policy: policy}
}
