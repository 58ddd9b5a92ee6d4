package testcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/modelcar/modelcar/internal/kube"
)

// Options configures Start.
type Options struct {
	// Dir holds everything the cluster writes: PKI, etcd data, logs
	// (logs/NAME.log), the PID file, kwok's configuration and the admin
	// kubeconfig. It is created if missing; a cluster still running there
	// is an error.
	Dir string
	// Log receives progress lines (nil: discarded).
	Log io.Writer
	// Detach starts the processes in sessions of their own that outlive
	// the calling process (`make cluster-up`). Otherwise they are killed
	// when the calling process dies.
	Detach bool
	// NoNodes skips the node fixtures (testdata/cluster/nodes.yaml).
	NoNodes bool
}

// Cluster is a running test cluster.
type Cluster struct {
	// Dir is the cluster's directory (see Options.Dir).
	Dir string
	// Kubeconfig is the path of the admin kubeconfig (user in
	// system:masters, server https://127.0.0.1:PORT, certificates
	// embedded).
	Kubeconfig string
	// Server is the apiserver's URL.
	Server string

	config *rest.Config
	client kubernetes.Interface
	procs  []*process
	owned  bool // Stop stops the processes (false: attached to a cluster someone else runs)
}

// Kubeconfig file and context names in a cluster's directory.
const (
	KubeconfigFile = "kubeconfig"
	ContextName    = "modelcar-testcluster"
)

// Timeouts for each start step (generous for two busy cores).
const (
	etcdStartTimeout      = 60 * time.Second
	apiserverStartTimeout = 120 * time.Second
	componentStartTimeout = 60 * time.Second
	nodesReadyTimeout     = 90 * time.Second
)

// The label (key=value) of the nodes kwok manages: every node fixture has
// it, and so must nodes tests add (NodePool sets it). Other nodes are left
// alone by kwok.
const (
	ManagedNodeLabelKey   = "type"
	ManagedNodeLabelValue = "kwok"
)

// Start starts a cluster from the cached binaries (it builds nothing: see
// Build) in opts.Dir and returns once the apiserver is ready, the
// controller-manager and scheduler are healthy, kwok runs and the node
// fixtures are Ready and schedulable. On failure everything it started is
// stopped again and the error carries the end of the failing process's log.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	// Ports are chosen free, then bound by another process: a port taken
	// in between (by a cluster another test binary starts) fails the
	// start, and a second try with other ports succeeds.
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var c *Cluster
		c, err = start(ctx, opts)
		if err == nil || !errors.Is(err, errPortInUse) || ctx.Err() != nil {
			return c, err
		}
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, "testcluster: a port was taken, starting again: %v\n", err)
		}
	}
	return nil, err
}

// errPortInUse marks a start that failed because a process could not bind
// its port.
var errPortInUse = errors.New("port already in use")

func start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Dir == "" {
		return nil, errors.New("testcluster: Options.Dir is empty")
	}
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	begin := time.Now()
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if running, err := runningIn(dir); err != nil {
		return nil, err
	} else if len(running) > 0 {
		return nil, fmt.Errorf("testcluster: a cluster is already running in %s (%s pid %d); stop it first (make cluster-down)", dir, running[0].name, running[0].pid)
	}
	// A fresh cluster: no state from an earlier one (a real node of a
	// crashed run is torn down first: it left mounts and a namespace).
	if err := teardownNodes(dir); err != nil {
		return nil, fmt.Errorf("testcluster: removing the real nodes an earlier cluster left in %s: %w", dir, err)
	}
	for _, sub := range []string{"nodes", PIDFile, "etcd", "pki", "kwok", "logs", "kcm", "scheduler", KubeconfigFile} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return nil, err
		}
	}
	bins := map[string]string{}
	for _, name := range ClusterTools {
		p, err := BinaryPath(name)
		if err != nil {
			return nil, err
		}
		bins[name] = p
	}

	c = &Cluster{Dir: dir, Kubeconfig: filepath.Join(dir, KubeconfigFile), owned: true}
	defer func() {
		if err != nil {
			if stopErr := stopAll(c.procs); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
			_ = os.Remove(filepath.Join(dir, PIDFile))
			c = nil
		}
	}()
	start := func(name string, args, env []string) (*process, error) {
		p, err := startProcess(dir, name, bins[name], args, env, opts.Detach)
		if err != nil {
			return nil, err
		}
		c.procs = append(c.procs, p)
		return p, nil
	}
	step := func(format string, args ...any) {
		fmt.Fprintf(logw, "testcluster: %6.1fs %s\n", time.Since(begin).Seconds(), fmt.Sprintf(format, args...))
	}

	pk, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("testcluster: PKI: %w", err)
	}
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, kcmPort, schedPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	c.Server = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	// etcd.
	etcd, err := start("etcd", []string{
		"--name=default",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		"--initial-cluster-state=new",
		"--listen-metrics-urls=",
		// A throw-away cluster: durability is not worth an fsync per write.
		"--unsafe-no-fsync",
		"--quota-backend-bytes=" + strconv.Itoa(2<<30),
		"--log-level=warn",
	}, nil)
	if err != nil {
		return nil, err
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if err := waitHTTP(ctx, plain, etcd, etcdURL+"/health", etcdStartTimeout, func(body string) bool {
		return strings.Contains(body, `"health":"true"`)
	}); err != nil {
		return nil, err
	}
	step("etcd ready on %s", etcdURL)

	// kube-apiserver.
	api, err := start("kube-apiserver", []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--etcd-servers=" + etcdURL,
		"--tls-cert-file=" + pk.ServingCert,
		"--tls-private-key-file=" + pk.ServingKey,
		"--client-ca-file=" + pk.CACert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + pk.SAPub,
		"--service-account-signing-key-file=" + pk.SAKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// The "kubernetes" Service would get 127.0.0.1 as its endpoint,
		// which endpoint validation rejects; nothing in-cluster needs it.
		"--endpoint-reconciler-type=none",
		// An aggregation-layer CA, so the controller-manager and scheduler
		// find one (they log an error a minute without). No certificate
		// with the allowed name is ever issued.
		"--requestheader-client-ca-file=" + pk.CACert,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--profiling=false",
		// Reach kubelets (kwok's nodes, for logs) by their InternalIP only,
		// which the fixtures set to 127.0.0.1: never a DNS lookup of a
		// node name.
		"--kubelet-preferred-address-types=InternalIP",
		"--cert-dir=" + filepath.Join(dir, "pki", "apiserver-generated"),
	}, nil)
	if err != nil {
		return nil, err
	}
	admin, err := pk.adminTLSConfig()
	if err != nil {
		return nil, err
	}
	mtls := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: admin}}
	if err := waitHTTP(ctx, mtls, api, c.Server+"/readyz", apiserverStartTimeout, func(body string) bool {
		return strings.TrimSpace(body) == "ok"
	}); err != nil {
		return nil, err
	}
	step("kube-apiserver ready on %s", c.Server)

	if err := writeKubeconfig(c.Kubeconfig, c.Server, pk); err != nil {
		return nil, err
	}
	if err := c.connect(); err != nil {
		return nil, err
	}

	// kube-controller-manager and kube-scheduler, with the admin
	// credentials (no per-controller service accounts).
	kcm, err := start("kube-controller-manager", []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--authentication-kubeconfig=" + c.Kubeconfig,
		"--authorization-kubeconfig=" + c.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(kcmPort),
		"--cert-dir=" + filepath.Join(dir, "kcm"),
		// Not /usr/libexec/kubernetes/..., which it would create.
		"--flex-volume-plugin-dir=" + filepath.Join(dir, "kcm", "flexvolume"),
		"--leader-elect=false",
		"--service-account-private-key-file=" + pk.SAKey,
		"--root-ca-file=" + pk.CACert,
		"--cluster-signing-cert-file=" + pk.CACert,
		"--cluster-signing-key-file=" + pk.CAKey,
		"--use-service-account-credentials=false",
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--profiling=false",
	}, nil)
	if err != nil {
		return nil, err
	}
	sched, err := start("kube-scheduler", []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--authentication-kubeconfig=" + c.Kubeconfig,
		"--authorization-kubeconfig=" + c.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(schedPort),
		"--cert-dir=" + filepath.Join(dir, "scheduler"),
		"--leader-elect=false",
		"--profiling=false",
	}, nil)
	if err != nil {
		return nil, err
	}
	// Their serving certificates are self-signed on the fly: /healthz is
	// checked for liveness, not for identity.
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback health check
	}}
	okBody := func(body string) bool { return strings.TrimSpace(body) == "ok" }
	if err := waitHTTP(ctx, insecure, kcm, "https://127.0.0.1:"+strconv.Itoa(kcmPort)+"/healthz", componentStartTimeout, okBody); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, insecure, sched, "https://127.0.0.1:"+strconv.Itoa(schedPort)+"/healthz", componentStartTimeout, okBody); err != nil {
		return nil, err
	}
	step("kube-controller-manager and kube-scheduler healthy")

	// kwok, configured from the embedded fixtures.
	kwokDir := filepath.Join(dir, "kwok")
	configs, err := writeKwokConfig(kwokDir)
	if err != nil {
		return nil, err
	}
	kwokArgs := []string{"--kubeconfig=" + c.Kubeconfig}
	for _, cfg := range configs {
		kwokArgs = append(kwokArgs, "--config="+cfg)
	}
	kwok, err := start("kwok", kwokArgs, []string{
		// Not ~/.kwok: no user configuration leaks in.
		"KWOK_WORKDIR=" + kwokDir,
	})
	if err != nil {
		return nil, err
	}
	step("kwok started")

	if !opts.NoNodes {
		nodes, err := fixtureNodes()
		if err != nil {
			return nil, err
		}
		if err := c.createNodes(ctx, nodes); err != nil {
			return nil, err
		}
		names := make([]string, len(nodes))
		for i, n := range nodes {
			names[i] = n.Name
		}
		if err := c.waitNodesSchedulable(ctx, kwok, names, nodesReadyTimeout); err != nil {
			return nil, err
		}
		step("nodes ready: %s", strings.Join(names, ", "))
	}
	// The serviceaccount controller has made "default" in "default": the
	// controller-manager's controllers run.
	if err := c.waitDefaultServiceAccount(ctx, "default", componentStartTimeout); err != nil {
		return nil, err
	}
	step("cluster ready in %v (kubeconfig %s)", time.Since(begin).Round(100*time.Millisecond), c.Kubeconfig)
	return c, nil
}

// Attach returns a Cluster for the one already running whose admin
// kubeconfig is at kubeconfig (started by `make cluster-up`). Stop on it
// does nothing: whoever started it stops it.
func Attach(ctx context.Context, kubeconfig string) (*Cluster, error) {
	abs, err := filepath.Abs(kubeconfig)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: filepath.Dir(abs), Kubeconfig: abs}
	if err := c.connect(); err != nil {
		return nil, err
	}
	c.Server = c.config.Host
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("testcluster: cluster of %s is not ready: %w", abs, err)
	}
	if strings.TrimSpace(string(body)) != "ok" {
		return nil, fmt.Errorf("testcluster: cluster of %s is not ready: /readyz says %q", abs, body)
	}
	return c, nil
}

func (c *Cluster) connect() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return fmt.Errorf("testcluster: loading %s: %w", c.Kubeconfig, err)
	}
	cfg.QPS = 100
	cfg.Burst = 200
	cfg.UserAgent = "modelcar-testcluster"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	c.config, c.client = cfg, client
	return nil
}

// Client returns a clientset with the cluster's admin credentials.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// RESTConfig returns a copy of the admin REST configuration.
func (c *Cluster) RESTConfig() *rest.Config { return rest.CopyConfig(c.config) }

// Kube returns a kube.Client (the applier modelcar uses) with the admin
// configuration.
func (c *Cluster) Kube() *kube.Client {
	k, err := kube.New(c.RESTConfig())
	if err != nil {
		panic(fmt.Sprintf("testcluster: kube client: %v", err)) // only a malformed config fails
	}
	return k
}

// Stop stops the processes in reverse start order: kwok, kube-scheduler,
// kube-controller-manager, kube-apiserver (waited for until it has exited),
// then etcd; each gets SIGTERM, then SIGKILL after a grace period. The
// directory and its logs stay. Stop on an attached cluster does nothing.
func (c *Cluster) Stop() error {
	if c == nil || !c.owned {
		return nil
	}
	err := stopAll(c.procs)
	if err == nil {
		c.procs = nil
		if rmErr := os.Remove(filepath.Join(c.Dir, PIDFile)); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = rmErr
		}
	}
	return err
}

// LogPath returns the log file of the named process (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kwok).
func (c *Cluster) LogPath(name string) string {
	return filepath.Join(c.Dir, "logs", name+".log")
}

// waitHTTP polls url until ok accepts the body of a 200 answer, p exits, or
// timeout passes.
func waitHTTP(ctx context.Context, client *http.Client, p *process, url string, timeout time.Duration, ok func(string) bool) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if !p.alive() {
			return false, p.exitError()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		return resp.StatusCode == http.StatusOK && ok(string(body)), nil
	})
	if err != nil {
		if !p.alive() {
			return p.exitError()
		}
		return fmt.Errorf("testcluster: %s not ready at %s within %v (last: %s): %w; end of %s:\n%s",
			p.name, url, timeout, last, err, p.log, tailFile(p.log, 30))
	}
	return nil
}

// waitNodesSchedulable waits until every node in names is Ready and without
// the not-ready taint the apiserver puts on new nodes.
func (c *Cluster) waitNodesSchedulable(ctx context.Context, kwok *process, names []string, timeout time.Duration) error {
	var pending string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if kwok != nil && !kwok.alive() {
			return false, kwok.exitError()
		}
		for _, name := range names {
			n, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				pending = fmt.Sprintf("%s: %v", name, err)
				return false, nil
			}
			if why := unschedulable(n); why != "" {
				pending = name + ": " + why
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		msg := fmt.Sprintf("testcluster: nodes not schedulable within %v (%s): %v", timeout, pending, err)
		if kwok != nil {
			msg += fmt.Sprintf("; end of %s:\n%s", kwok.log, tailFile(kwok.log, 30))
		}
		return errors.New(msg)
	}
	return nil
}

// unschedulable says why n cannot take pods yet ("" when it can).
func unschedulable(n *corev1.Node) string {
	ready := false
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready {
		return "not Ready"
	}
	for _, t := range n.Spec.Taints {
		if strings.HasPrefix(t.Key, "node.kubernetes.io/") {
			return "taint " + t.Key
		}
	}
	return ""
}

func (c *Cluster) waitDefaultServiceAccount(ctx context.Context, ns string, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("testcluster: no default service account in %s within %v: %w; end of %s:\n%s",
			ns, timeout, err, c.LogPath("kube-controller-manager"), tailFile(c.LogPath("kube-controller-manager"), 20))
	}
	return nil
}

// adminTLSConfig is a TLS client configuration with the admin certificate,
// trusting only the cluster CA.
func (p *pki) adminTLSConfig() (*tls.Config, error) {
	cert, err := tls.X509KeyPair(p.adminPEM, p.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.caPEM) {
		return nil, errors.New("testcluster: bad CA certificate")
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// writeKubeconfig writes the admin kubeconfig, certificates embedded.
func writeKubeconfig(path, server string, p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[ContextName] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos[ContextName] = &clientcmdapi.AuthInfo{ClientCertificateData: p.adminPEM, ClientKeyData: p.adminKeyPEM}
	cfg.Contexts[ContextName] = &clientcmdapi.Context{Cluster: ContextName, AuthInfo: ContextName, Namespace: "default"}
	cfg.CurrentContext = ContextName
	return clientcmd.WriteToFile(*cfg, path)
}
