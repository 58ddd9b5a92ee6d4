package push

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unreachable returns the address of a socket that accepts no connection:
// it listens with a backlog of 0, already taken, so the kernel drops new
// SYNs and connecting hangs, like a host that is gone.
func unreachable(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// The one connection the backlog takes, never accepted.
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Close() })
	return addr
}

// TestStallWhileConnecting: connecting to a host that never answers fails
// after the idle timeout with a *StallError naming the address; the API
// client tries twice, the uploader's once.
func TestStallWhileConnecting(t *testing.T) {
	const idle = 400 * time.Millisecond
	addr := unreachable(t)
	rc := testClients(t, idle)
	for _, tc := range []struct {
		name     string
		c        *http.Client
		attempts int
	}{{"api", rc.api.Client, 2}, {"upload", rc.upload.Client, 1}} {
		begin := time.Now()
		resp, err := tc.c.Get("http://" + addr + "/v2/")
		elapsed := time.Since(begin)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("%s: connected to a socket that accepts nothing", tc.name)
		}
		var se *StallError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "connecting to "+addr+": no data for 0.4s") {
			t.Fatalf("%s: err = %v, want a stall while connecting to %s", tc.name, err, addr)
		}
		min := time.Duration(tc.attempts) * idle
		if max := min + stallRetryWait + 2*time.Second; elapsed < min-50*time.Millisecond || elapsed > max {
			t.Errorf("%s: failed after %v, want %d × %v", tc.name, elapsed, tc.attempts, idle)
		}
	}
}
