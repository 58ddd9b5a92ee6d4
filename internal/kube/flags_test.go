package kube

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestFlagsConnect: the flags parse as kubectl's (--kubeconfig, else
// $KUBECONFIG; --context; -n), the namespace comes from -n, else the
// context, else default, every request carries the one User-Agent, and a
// missing kubeconfig or context is an error (never localhost:8080).
func TestFlagsConnect(t *testing.T) {
	var (
		mu     sync.Mutex
		agents []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		agents = append(agents, r.UserAgent())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"team-a"}}`))
	}))
	defer srv.Close()
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "`+srv.URL+`"}
contexts:
- name: a
  context: {cluster: c, user: u, namespace: team-a}
- name: b
  context: {cluster: c, user: u}
current-context: a
users:
- name: u
  user: {token: x}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		ns   string
	}{
		{[]string{"--kubeconfig", kc}, "team-a"},
		{[]string{"--kubeconfig", kc, "--context", "b"}, "default"},
		{[]string{"--kubeconfig", kc, "-n", "team-c"}, "team-c"},
	} {
		f := NewFlags("modelcar/test")
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		c, ns, err := f.Connect()
		if err != nil || ns != tc.ns {
			t.Errorf("%q: namespace %q, %v; want %q", tc.args, ns, err, tc.ns)
			continue
		}
		if !f.Explicit() {
			t.Errorf("%q: not explicit", tc.args)
		}
		if _, err := c.Clientset.CoreV1().Namespaces().Get(context.Background(), "team-a", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(agents) != 3 {
		t.Fatalf("%d requests, want 3", len(agents))
	}
	for _, a := range agents {
		if a != "modelcar/test" {
			t.Errorf("User-Agent %q, want modelcar/test", a)
		}
	}
	t.Setenv("KUBECONFIG", kc)
	if _, ns, err := NewFlags("x").Connect(); err != nil || ns != "team-a" {
		t.Errorf("$KUBECONFIG: namespace %q, %v", ns, err)
	}
	if _, _, err := NewFlags("x").Set("", "nope", "").Connect(); err == nil {
		t.Error("an unknown context: nil error")
	}
	f := NewFlags("x").Set(filepath.Join(t.TempDir(), "missing"), "", "")
	var ce *ConfigError
	if _, _, err := f.Connect(); err == nil || !errors.As(err, &ce) {
		t.Errorf("a missing kubeconfig: %v, want a ConfigError", err)
	}
	if got := f.RenderNamespace(); got != "default" {
		t.Errorf("RenderNamespace without a kubeconfig: %q", got)
	}
}
