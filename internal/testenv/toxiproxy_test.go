package testenv

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/toolcache"
)

func TestToxiproxyVersionPinned(t *testing.T) {
	dir, err := findToxiproxyModule()
	if err != nil {
		t.Fatal(err)
	}
	v, err := toolcache.RequiredVersion(filepath.Join(dir, "go.mod"), toxiproxyModule)
	if err != nil {
		t.Fatal(err)
	}
	if v != toxiproxyVersion {
		t.Errorf("%s/go.mod pins toxiproxy %s, toxiproxy.go falls back to %s", ToxiproxyModuleDir, v, toxiproxyVersion)
	}
}

// TestToxiproxyToxics drives each toxic the fault suites use against a
// plain HTTP server, one connection per request, and checks it does what
// its name says.
func TestToxiproxyToxics(t *testing.T) {
	if testing.Short() {
		t.Skip("starts toxiproxy-server")
	}
	body := bytes.Repeat([]byte("modelcar"), 8<<10) // 64 KiB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	upstream := strings.TrimPrefix(srv.URL, "http://")

	tp := StartToxiproxy(t)
	p := tp.Proxy(t, "web", upstream)
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	get := func() (time.Duration, error) {
		begin := time.Now()
		resp, err := client.Get("http://" + p.Addr + "/")
		if err != nil {
			return time.Since(begin), err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && !bytes.Equal(b, body) {
			err = errors.New("body differs")
		}
		return time.Since(begin), err
	}
	mustGet := func(what string) time.Duration {
		t.Helper()
		d, err := get()
		if err != nil {
			t.Fatalf("%s: GET through the proxy: %v", what, err)
		}
		return d
	}
	with := func(tx Toxic, fn func()) {
		t.Helper()
		tx.Name = "t"
		if err := p.Add(tx); err != nil {
			t.Fatal(err)
		}
		fn()
		if err := p.Remove("t"); err != nil {
			t.Fatal(err)
		}
	}

	mustGet("no toxic")
	with(Latency(Downstream, 150, 10), func() {
		if d := mustGet("latency"); d < 140*time.Millisecond {
			t.Errorf("latency 150ms±10: answered in %v", d)
		}
	})
	with(Bandwidth(Downstream, 64), func() { // 64 KB/s, 64 KiB: about a second
		if d := mustGet("bandwidth"); d < 700*time.Millisecond {
			t.Errorf("64 KiB at 64 KB/s: took %v", d)
		}
	})
	with(Slicer(Downstream, 100, 50, 10), func() { mustGet("slicer") })
	with(ResetPeer(Upstream, 0), func() {
		if _, err := get(); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("reset_peer: got %v, want a connection reset", err)
		}
	})
	// Upstream: the request never arrives, the server waits, and the
	// connection is closed after 300ms of silence. (Downstream, a server
	// that closes after answering would end the stall at once.)
	with(Timeout(Upstream, 300), func() {
		d, err := get()
		if err == nil || d < 250*time.Millisecond {
			t.Errorf("timeout 300ms: got %v after %v, want an error after the stall", err, d)
		}
	})
	with(LimitData(Downstream, 1000), func() {
		if _, err := get(); err == nil {
			t.Error("limit_data 1000: a 64 KiB body came through")
		}
	})
	mustGet("all toxics removed")

	// A trip: inert until fired, then resets, then gone.
	trip, err := p.Arm(ResetPeer(Upstream, 0), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	mustGet("armed trip")
	count := trip.After(100)
	count(60)
	if trip.Fired() {
		t.Fatal("fired before 100 bytes")
	}
	count(60)
	if !trip.Fired() {
		t.Fatal("not fired after 120 bytes")
	}
	if _, err := get(); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("fired trip: got %v, want a connection reset", err)
	}
	if err := trip.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	mustGet("trip removed")
	if txs, err := p.Toxics(); err != nil || len(txs) != 0 {
		t.Errorf("toxics after the trip: %+v, %v", txs, err)
	}

	// A stall tripped mid-response: the connection is closed when the trip
	// ends (no hole in the stream: the client sees an error, not a hang).
	p.Add(Bandwidth(Downstream, 32)) // 64 KiB in two seconds
	stall, err := p.Arm(Timeout(Downstream, 0), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(500*time.Millisecond, stall.Fire)
	if d, err := get(); err == nil || d > 5*time.Second {
		t.Errorf("stall removed mid-response: got %v after %v, want an error soon after", err, d)
	}
	if err := stall.Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveAll(); err != nil {
		t.Fatal(err)
	}

	if err := p.SetEnabled(false); err != nil {
		t.Fatal(err)
	}
	if _, err := get(); err == nil {
		t.Error("a disabled proxy answered")
	}
	if err := p.SetEnabled(true); err != nil {
		t.Fatal(err)
	}
	mustGet("re-enabled")
}
