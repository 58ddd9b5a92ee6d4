package push

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer is a TCP server on 127.0.0.1 whose connections serve handles;
// it counts the connections it accepted. Connections stay open until the
// test ends, so a handler that returns leaves its peer stalled.
type rawServer struct {
	addr  string
	conns atomic.Int32
}

func startRawServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: ln.Addr().String()}
	var mu sync.Mutex
	var open []net.Conn
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return s
}

// readHead reads a request's header block.
func readHead(br *bufio.Reader) (contentLength int64, err error) {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return 0, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return contentLength, nil
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
			fmt.Sscan(strings.TrimSpace(v), &contentLength)
		}
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func testClients(t *testing.T, idle time.Duration) *registryClient {
	t.Helper()
	o := defaultOptions()
	o.idleTimeout = idle
	c, err := o.httpClient()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestStallDetectedInEveryPhase stalls a request for good at each phase
// of an HTTP exchange: the peer stops reading the request body, never
// answers, or stops in the middle of its answer's body. Each fails with a
// *StallError saying "no data for 0.4s" after about the idle timeout per
// attempt, never later; the registry-API client re-sends it once on a new
// connection (not mid-body: the answer was already handed over), the
// uploader's client never does (the uploader resumes instead).
func TestStallDetectedInEveryPhase(t *testing.T) {
	const idle = 400 * time.Millisecond
	const slack = 2 * time.Second // scheduling on a loaded machine
	phases := []struct {
		name  string
		serve func(c net.Conn, br *bufio.Reader)
		// request sends the request and reads the answer.
		request func(t *testing.T, c *http.Client, addr string) error
		midBody bool
	}{
		{
			name: "request body",
			// Headers read, then the body is never read: the client's
			// writes block once the socket buffers are full.
			serve: func(c net.Conn, br *bufio.Reader) { readHead(br) },
			request: func(t *testing.T, c *http.Client, addr string) error {
				const n = 64 << 20
				req, _ := http.NewRequest(http.MethodPatch, "http://"+addr+"/v2/r/blobs/uploads/x", io.LimitReader(zeros{}, n))
				req.ContentLength = n
				req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(io.LimitReader(zeros{}, n)), nil }
				resp, err := c.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				return err
			},
		},
		{
			name: "response headers",
			serve: func(c net.Conn, br *bufio.Reader) {
				n, err := readHead(br)
				if err == nil {
					io.CopyN(io.Discard, br, n)
				}
			},
			request: func(t *testing.T, c *http.Client, addr string) error {
				resp, err := c.Get("http://" + addr + "/v2/r/manifests/v1")
				if err == nil {
					resp.Body.Close()
				}
				return err
			},
		},
		{
			name: "response body",
			serve: func(c net.Conn, br *bufio.Reader) {
				if _, err := readHead(br); err != nil {
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 1<<20)
				c.Write(make([]byte, 64<<10))
			},
			request: func(t *testing.T, c *http.Client, addr string) error {
				resp, err := c.Get("http://" + addr + "/v2/r/blobs/sha256:00")
				if err != nil {
					t.Fatalf("the answer's headers came, yet: %v", err)
				}
				defer resp.Body.Close()
				n, err := io.Copy(io.Discard, resp.Body)
				if n != 64<<10 {
					t.Errorf("read %d bytes of the body, want the %d sent", n, 64<<10)
				}
				return err
			},
			midBody: true,
		},
	}
	for _, ph := range phases {
		for _, client := range []string{"api", "upload"} {
			t.Run(ph.name+"/"+client, func(t *testing.T) {
				srv := startRawServer(t, ph.serve)
				rc := testClients(t, idle)
				c, attempts := rc.api.Client, 2
				if client == "upload" || ph.midBody {
					attempts = 1
				}
				if client == "upload" {
					c = rc.upload.Client
				}
				begin := time.Now()
				err := ph.request(t, c, srv.addr)
				elapsed := time.Since(begin)
				var se *StallError
				if !errors.As(err, &se) {
					t.Fatalf("err = %v, want a stall", err)
				}
				if !strings.Contains(err.Error(), "no data for 0.4s") {
					t.Errorf("error %q does not say \"no data for 0.4s\"", err)
				}
				if min := time.Duration(attempts) * idle; elapsed < min-50*time.Millisecond {
					t.Errorf("failed after %v, before %d × the idle timeout", elapsed, attempts)
				}
				if max := time.Duration(attempts)*idle + slack; elapsed > max {
					t.Errorf("failed after %v, want at most %v (%d attempts)", elapsed, max, attempts)
				}
				if got := srv.conns.Load(); got != int32(attempts) {
					t.Errorf("%d connections, want %d (one per attempt)", got, attempts)
				}
				t.Logf("%s: %v after %v, %d connections", ph.name, err, elapsed.Round(time.Millisecond), srv.conns.Load())
			})
		}
	}
}

// TestSlowButMovingIsNotAStall: a peer that reads a request body, or sends
// an answer, far slower than the link allows but without ever pausing for
// the idle timeout, is not a stall, however long the whole exchange takes
// (here 4 to 6 idle timeouts).
func TestSlowButMovingIsNotAStall(t *testing.T) {
	const idle = 250 * time.Millisecond
	const size = 8 << 20
	const step = 64 << 10
	const every = 10 * time.Millisecond // 6.4 MB/s
	t.Run("upload", func(t *testing.T) {
		srv := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
			// A small receive buffer, so the client's writes move at the
			// pace the body is read.
			c.(*net.TCPConn).SetReadBuffer(64 << 10)
			n, err := readHead(br)
			if err != nil {
				return
			}
			tick := time.NewTicker(every)
			defer tick.Stop()
			for ; n > 0; n -= step {
				<-tick.C
				if _, err := io.CopyN(io.Discard, br, min(n, step)); err != nil {
					return
				}
			}
			io.WriteString(c, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
		})
		c := testClients(t, idle).upload.Client
		req, _ := http.NewRequest(http.MethodPatch, "http://"+srv.addr+"/v2/r/blobs/uploads/x", io.LimitReader(zeros{}, size))
		req.ContentLength = size
		begin := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("after %v: %v", time.Since(begin), err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status %s", resp.Status)
		}
		if d := time.Since(begin); d < 2*idle {
			t.Fatalf("the upload took %v, not longer than the idle timeout: the test proves nothing", d)
		} else {
			t.Logf("upload of %d bytes took %v with a %v idle timeout", size, d.Round(time.Millisecond), idle)
		}
	})
	t.Run("download", func(t *testing.T) {
		srv := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
			if _, err := readHead(br); err != nil {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
			tick := time.NewTicker(every)
			defer tick.Stop()
			buf := make([]byte, step)
			for n := size; n > 0; n -= step {
				<-tick.C
				if _, err := c.Write(buf[:min(n, step)]); err != nil {
					return
				}
			}
		})
		c := testClients(t, idle).upload.Client
		begin := time.Now()
		resp, err := c.Get("http://" + srv.addr + "/v2/r/blobs/sha256:00")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil || n != size {
			t.Fatalf("read %d of %d bytes after %v: %v", n, size, time.Since(begin), err)
		}
		if d := time.Since(begin); d < 2*idle {
			t.Fatalf("the download took %v, not longer than the idle timeout: the test proves nothing", d)
		}
	})
}

// TestReusedConnectionGetsTheWholeIdleTimeout: a kept-alive connection that
// sat unused for most of the idle timeout, then carries a request that the
// server answers after more than the rest of it, is not stalled: the clock
// starts again when the request is sent. (It used to run from when the
// connection's reader started waiting, so the request failed, or, when
// idempotent, was sent twice.)
func TestReusedConnectionGetsTheWholeIdleTimeout(t *testing.T) {
	const idle = 400 * time.Millisecond
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 2 {
			time.Sleep(idle * 3 / 4) // a slow answer, well within the idle timeout
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	c := testClients(t, idle).upload.Client
	post := func() {
		t.Helper()
		resp, err := c.Post(srv.URL+"/v2/r/blobs/uploads/", "application/octet-stream", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	var conns atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	post()
	time.Sleep(idle * 3 / 4) // the connection sits in the pool
	post()
	if n := requests.Load(); n != 2 {
		t.Errorf("the server saw %d requests, want 2", n)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1 (the second request on the kept-alive one)", n)
	}
}

// TestStalledRequestSentAtMostTwice: a GET that stalls on a kept-alive
// connection is re-sent by net/http on a new one (the pooled ones are
// dropped with the stalled one); when that stalls too, stallRetry does not
// send it a third time.
func TestStalledRequestSentAtMostTwice(t *testing.T) {
	const idle = 400 * time.Millisecond
	var requests atomic.Int32
	srv := startRawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := readHead(br); err != nil {
				return
			}
			if requests.Add(1) > 1 {
				return // every request but the first stalls
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	c := testClients(t, idle).api.Client
	get := func() error {
		resp, err := c.Get("http://" + srv.addr + "/v2/r/manifests/v1")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err := get()
	elapsed := time.Since(begin)
	var se *StallError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want a stall", err)
	}
	if n := requests.Load(); n != 3 {
		t.Errorf("the server got %d requests, want 3: one answered, the stalled one sent twice", n)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2: the kept-alive one, then one new", n)
	}
	if elapsed > 2*idle+stallRetryWait+2*time.Second {
		t.Errorf("failed after %v, want about 2 × %v", elapsed, idle)
	}
}

// TestRetryPolicy: oras-go's retries never re-send a request that timed
// out (stallRetry and the uploader do), nor one whose context ended; other
// failures keep oras-go's policy (5 retries of a 503).
func TestRetryPolicy(t *testing.T) {
	stall := fmt.Errorf("wrapped: %w", &StallError{Idle: time.Second})
	dial := &net.OpError{Op: "dial", Err: &timeoutErr{}}
	unavailable := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}}
	for _, tc := range []struct {
		name    string
		attempt int
		resp    *http.Response
		err     error
		retry   bool
	}{
		{"stall", 0, nil, stall, false},
		{"dial timeout", 0, nil, dial, false},
		{"deadline", 0, nil, fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"503, fifth", 4, unavailable, nil, true},
		{"503, sixth", 5, unavailable, nil, false},
	} {
		d, err := retryPolicy{}.Retry(tc.attempt, tc.resp, tc.err)
		if got := err == nil && d >= 0; got != tc.retry {
			t.Errorf("%s: Retry = %v, %v; want retry %v", tc.name, d, err, tc.retry)
		}
	}
	if !isTimeout(stall) || !isTimeout(dial) || isTimeout(context.DeadlineExceeded) || isTimeout(errors.New("x")) {
		t.Error("isTimeout misjudges a stall, a dial timeout, a deadline or a plain error")
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }
