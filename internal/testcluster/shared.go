package testcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Environment variables the test helpers read.
const (
	// E2EEnv set to 1 (CI) turns "cluster unavailable" skips into failures.
	E2EEnv = "MODELCAR_E2E"
	// KubeconfigEnv points at the admin kubeconfig of a cluster started by
	// `make cluster-up`; Shared then uses that cluster instead of starting
	// one. (KUBECONFIG alone is not enough: tests must not run against
	// whatever cluster a developer's KUBECONFIG happens to name.)
	KubeconfigEnv = "MODELCAR_CLUSTER_KUBECONFIG"
	// KeepEnv set to 1 keeps a test cluster's directory (logs, etcd data)
	// after the tests, passed or not; it is always kept when they fail.
	KeepEnv = "MODELCAR_CLUSTER_KEEP"
)

// startTimeout bounds one Start from Shared.
const startTimeout = 5 * time.Minute

var shared struct {
	sync.Mutex
	mainRunning bool
	once        sync.Once
	cluster     *Cluster
	dir         string // temporary directory Shared started the cluster in
	skip        string // why the cluster is unavailable (skip or fail)
	err         error  // why starting it failed
	startTime   time.Duration
}

// Main is the TestMain of a package whose tests use Shared:
//
//	func TestMain(m *testing.M) { testcluster.Main(m) }
//
// It runs the tests, then stops the cluster Shared started (if any) and
// exits with the tests' status. The cluster's directory is removed unless
// the tests failed or MODELCAR_CLUSTER_KEEP=1, in which case its path is
// printed.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain with work of its own after the tests: it runs
// them, stops the cluster Shared started, and returns the exit status
// instead of exiting.
func Run(m *testing.M) int {
	RunNodeAgentIfRequested()
	shared.Lock()
	shared.mainRunning = true
	shared.Unlock()
	code := m.Run()
	if err := stopShared(code != 0); err != nil {
		fmt.Fprintf(os.Stderr, "testcluster: stopping the shared cluster: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

func stopShared(failed bool) error {
	shared.Lock()
	defer shared.Unlock()
	c := shared.cluster
	if c == nil || !c.owned {
		return nil
	}
	err := c.Stop()
	if err == nil && !failed && os.Getenv(KeepEnv) != "1" {
		return os.RemoveAll(shared.dir)
	}
	fmt.Fprintf(os.Stderr, "testcluster: cluster directory kept: %s (logs in %s/logs)\n", shared.dir, shared.dir)
	return err
}

// Available reports whether Shared can give tests a cluster here without
// starting one first: a cluster-up cluster is named by
// MODELCAR_CLUSTER_KUBECONFIG, or every binary is cached. It is "" when
// available, else why not.
func Available() string {
	if os.Getenv(KubeconfigEnv) != "" {
		return ""
	}
	if missing := missingTools(ClusterTools); len(missing) > 0 {
		return fmt.Sprintf("testcluster: %s not built (cache %s); run .ci/install-deps.sh or `go run ./internal/cmd/testcluster build`",
			strings.Join(missing, ", "), binDirOrErr())
	}
	return ""
}

func binDirOrErr() string {
	d, err := BinDir()
	if err != nil {
		return err.Error()
	}
	return d
}

// Shared returns the test process's cluster, starting it on first use (one
// per test binary; stopped by Main after the tests). When
// MODELCAR_CLUSTER_KUBECONFIG names the kubeconfig of a cluster started by
// `make cluster-up`, that cluster is used instead and left running.
//
// In `go test -short`, or when the binaries are not built, the test is
// skipped with the reason, unless MODELCAR_E2E=1, which fails it. A cluster
// that fails to start fails the test. The package's TestMain must call Main.
//
// Tests share the cluster: each should work in its own namespace
// (Namespace), and a test that fills nodes should add its own (AddNodes,
// with a private taint) rather than count on the fixture pools being idle.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("testcluster: skipped in -short mode (needs a Kubernetes control plane)")
	}
	shared.Lock()
	mainRunning := shared.mainRunning
	shared.Unlock()
	if !mainRunning {
		t.Fatal("testcluster: Shared needs the package's TestMain to call testcluster.Main(m), which stops the cluster")
	}
	shared.once.Do(startShared)
	if shared.skip != "" {
		if os.Getenv(E2EEnv) == "1" {
			t.Fatalf("%s (%s=1: a missing cluster fails instead of skipping)", shared.skip, E2EEnv)
		}
		t.Skip(shared.skip + " (set " + E2EEnv + "=1 to fail instead of skipping)")
	}
	if shared.err != nil {
		t.Fatalf("testcluster: %v", shared.err)
	}
	return shared.cluster
}

func startShared() {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if kc := os.Getenv(KubeconfigEnv); kc != "" {
		c, err := Attach(ctx, kc)
		if err != nil {
			shared.err = fmt.Errorf("%s=%s: %w", KubeconfigEnv, kc, err)
			return
		}
		shared.cluster = c
		return
	}
	if why := Available(); why != "" {
		shared.skip = why
		return
	}
	dir, err := os.MkdirTemp("", "modelcar-testcluster-")
	if err != nil {
		shared.err = err
		return
	}
	begin := time.Now()
	c, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		shared.err = fmt.Errorf("%w (cluster directory %s kept)", err, dir)
		return
	}
	shared.Lock()
	shared.cluster, shared.dir, shared.startTime = c, dir, time.Since(begin)
	shared.Unlock()
}

// StartTime returns how long Shared took to start the process's cluster (0
// when it attached to a running one or has not started it).
func StartTime() time.Duration {
	shared.Lock()
	defer shared.Unlock()
	return shared.startTime
}

// Namespace creates a fresh namespace for t (name from prefix) and deletes
// it when t ends.
func (c *Cluster) Namespace(t testing.TB, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns, err := c.CreateNamespace(ctx, prefix)
	if err != nil {
		t.Fatalf("testcluster: creating namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Logf("testcluster: deleting namespace %s: %v", ns, err)
		}
	})
	return ns
}

// Nodes adds the fake nodes pool describes for t (see AddNodes) and deletes
// them when t ends.
func (c *Cluster) Nodes(t testing.TB, pool NodePool) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	names, err := c.AddNodes(ctx, pool)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.DeleteNodes(ctx, names...); err != nil {
			t.Logf("testcluster: deleting nodes: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("testcluster: adding nodes: %v", err)
	}
	return names
}

// RealNode gives t a real node (AddRealNode) that pulls from registries:
// the one `make cluster-up REAL_NODE=1` started when Shared attached to
// that cluster and it has one called opts.Name (default real-0), else a new
// one, stopped and removed when t ends. Without root, the node's tools or
// its binaries it skips, unless MODELCAR_E2E=1, which fails.
func (c *Cluster) RealNode(t testing.TB, opts RealNodeOptions) *RealNode {
	t.Helper()
	opts.defaults()
	ctx, cancel := context.WithTimeout(context.Background(), nodeStartTimeout+time.Minute)
	defer cancel()
	if !c.owned {
		n, err := c.attachRealNode(ctx, opts.Name)
		if err != nil {
			t.Fatalf("testcluster: %v", err)
		}
		if n != nil {
			for _, r := range opts.Registries {
				if err := n.AddRegistry(ctx, r); err != nil {
					t.Fatalf("testcluster: node %s: registry %s: %v", n.Name, r, err)
				}
			}
			return n
		}
	}
	if why := RealNodeAvailable(); why != "" {
		if os.Getenv(E2EEnv) == "1" {
			t.Fatalf("%s (%s=1: a real node that cannot start fails instead of skipping)", why, E2EEnv)
		}
		t.Skip(why + " (set " + E2EEnv + "=1 to fail instead of skipping)")
	}
	if opts.Log == nil || opts.Log == io.Discard {
		opts.Log = testWriter{t}
	}
	n, err := c.AddRealNode(ctx, opts)
	if err != nil {
		t.Fatalf("testcluster: real node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Errorf("testcluster: stopping node %s: %v", n.Name, err)
		}
	})
	return n
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
