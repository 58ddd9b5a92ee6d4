package testcluster

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/renameio/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubeletconfig "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"
)

// A real node is a kubelet with containerd, runc and CNI beside the kwok
// nodes: it pulls, unpacks, mounts and runs for real. Everything it has
// lives in one network namespace of its own, joined to the host by a veth
// pair (the node's InternalIP is the namespace's end: the kubelet refuses a
// loopback node IP, and the apiserver reaches the kubelet there for logs and
// exec). The control plane and registries stay on the host's 127.0.0.1; the
// node agent (nodeagent.go) forwards their ports into the namespace, where
// a tc token-bucket filter on the namespace's loopback shapes what the node
// pulls. Its pods get addresses on a bridge inside the namespace.

// RealNodeLabel marks real nodes (value "true"); kwok leaves them alone
// (they lack ManagedNodeLabelKey).
const RealNodeLabel = "modelcar.test/real-node"

// Real node tools: the kubelet from tools/k8s, containerd 2.4.2 and its runc
// shim from tools/coldstart, runc from tools/runc (cgo, seccomp).
const (
	ContainerdVersion = "v2.4.2" // github.com/containerd/containerd/v2 in tools/coldstart
	RuncVersion       = "v1.5.3" // github.com/opencontainers/runc in tools/runc
)

// RealNodeTools are the binaries a real node runs (beyond ClusterTools).
var RealNodeTools = []string{"kubelet", "containerd", "containerd-shim-runc-v2", "runc", "pause"}

// RealNodeOptions configures AddRealNode.
type RealNodeOptions struct {
	// Name is the node's name (default "real-0").
	Name string
	// Registries are plain-HTTP registries on the host's 127.0.0.1
	// (host:port) the node pulls from; more can be added later
	// (RealNode.AddRegistry).
	Registries []string
	// Rate is what the node's pulls are shaped to, in tc's syntax
	// (default "1gbit"); "none" leaves them unshaped.
	Rate string
	// GPUs is how many fake nvidia.com/gpu devices its device plugin
	// offers (default 4).
	GPUs int
	// Log receives progress lines (nil: discarded).
	Log io.Writer
	// Detach starts the processes in sessions of their own (`make
	// cluster-up`), as Options.Detach.
	Detach bool
}

func (o *RealNodeOptions) defaults() {
	if o.Name == "" {
		o.Name = "real-0"
	}
	if o.Rate == "" {
		o.Rate = "1gbit"
	}
	if o.GPUs == 0 {
		o.GPUs = 4
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// RealNode is a running real node.
type RealNode struct {
	Name string
	// Dir holds the node's state: containerd's root and state, the
	// kubelet's root directory, configurations, pod logs.
	Dir string
	// NetNS is the name of its network namespace (ip netns).
	NetNS string
	// IP is its InternalIP, the namespace's end of the veth pair.
	IP string
	// ContainerdSocket is containerd's gRPC socket (namespace k8s.io holds
	// what the kubelet pulled).
	ContainerdSocket string

	state   nodeState
	cluster *Cluster
	procs   []*process
	owned   bool
}

// nodeState is what teardown needs, written before anything is made.
type nodeState struct {
	Name       string   `json:"name"`
	NetNS      string   `json:"netns"`
	HostVeth   string   `json:"hostVeth"`
	CgroupRoot string   `json:"cgroupRoot"`
	Socket     string   `json:"containerdSocket"`
	Registries []string `json:"registries"`
	Agent      string   `json:"agentConfig"`
	APITarget  string   `json:"apiTarget"`
	NodeIP     string   `json:"nodeIP"`
	// Sysctls are the kernel settings the kubelet changes at start (it
	// cannot be told not to), as they were before: teardown puts them back.
	Sysctls map[string]string `json:"sysctls,omitempty"`
	// MadeDirs are the host directories the kubelet uses whatever its
	// configuration that did not exist before (removed when empty).
	MadeDirs []string `json:"madeDirs,omitempty"`
}

// DevicePluginDir is where every kubelet serves device-plugin registration,
// whatever its root directory: one real node per machine at a time.
const DevicePluginDir = "/var/lib/kubelet/device-plugins"

// kubeletSysctls are what the kubelet's container manager sets (vm and
// kernel), saved before it starts and restored at teardown.
var kubeletSysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

const nodeStateFile = "node.json"

func nodesDir(clusterDir string) string { return filepath.Join(clusterDir, "nodes") }

// nodeStartTimeout bounds a real node's start, Ready included.
const nodeStartTimeout = 3 * time.Minute

// AddRealNode starts a real node and returns once it is Ready, schedulable
// and offers its GPUs. On failure everything it made is removed again and
// the error carries the end of the failing process's log. It needs root,
// the binaries of RealNodeTools (BuildRealNode), iproute2, tc, nsenter,
// ctr and Debian's containernetworking-plugins.
func (c *Cluster) AddRealNode(ctx context.Context, opts RealNodeOptions) (n *RealNode, err error) {
	opts.defaults()
	if why := RealNodeAvailable(); why != "" {
		return nil, errors.New(why)
	}
	bins := map[string]string{}
	for _, name := range RealNodeTools {
		p, err := BinaryPath(name)
		if err != nil {
			return nil, err
		}
		bins[name] = p
	}
	begin := time.Now()
	step := func(format string, args ...any) {
		fmt.Fprintf(opts.Log, "testcluster: %6.1fs node %s: %s\n", time.Since(begin).Seconds(), opts.Name, fmt.Sprintf(format, args...))
	}
	dir := filepath.Join(nodesDir(c.Dir), opts.Name)
	if _, err := os.Stat(filepath.Join(dir, nodeStateFile)); err == nil {
		return nil, fmt.Errorf("testcluster: node %s already has state in %s; remove it first (make cluster-down)", opts.Name, dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(dir))
	id := hex.EncodeToString(sum[:4])
	subnet, err := freeNodeSubnet()
	if err != nil {
		return nil, err
	}
	apiURL := strings.TrimPrefix(c.Server, "https://")
	rn := &RealNode{
		Name:             opts.Name,
		Dir:              dir,
		NetNS:            "modelcar-node-" + id,
		IP:               subnet + ".2",
		ContainerdSocket: filepath.Join(dir, "containerd.sock"),
		cluster:          c,
		owned:            true,
	}
	n = rn // returns below set n to nil: the cleanup uses rn
	n.state = nodeState{
		Name: opts.Name, NetNS: n.NetNS, HostVeth: "mcn" + id, CgroupRoot: "/modelcar-node-" + id,
		Socket: n.ContainerdSocket, Agent: filepath.Join(dir, "agent.json"), APITarget: apiURL, NodeIP: n.IP,
	}
	if c, err := net.Dial("unix", filepath.Join(DevicePluginDir, "kubelet.sock")); err == nil {
		c.Close()
		return nil, fmt.Errorf("testcluster: another kubelet runs on this machine (it serves %s/kubelet.sock): one real node at a time; stop it (make cluster-down), or point tests at its cluster with %s", DevicePluginDir, KubeconfigEnv)
	}
	n.state.Sysctls = map[string]string{}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			n.state.Sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	for _, d := range []string{DevicePluginDir, filepath.Dir(DevicePluginDir), "/var/log/containers"} {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			n.state.MadeDirs = append(n.state.MadeDirs, d)
		}
	}
	if err := writeJSONFile(filepath.Join(dir, nodeStateFile), n.state); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if cleanErr := rn.Stop(context.Background()); cleanErr != nil {
				err = errors.Join(err, cleanErr)
			}
			n = nil
		}
	}()

	// The namespace, the veth pair and the shaped loopback.
	host, node := n.state.HostVeth, "mcn"+id+"n"
	for _, args := range [][]string{
		{"ip", "netns", "add", n.NetNS},
		{"ip", "link", "add", host, "type", "veth", "peer", "name", node},
		{"ip", "link", "set", node, "netns", n.NetNS},
		{"ip", "addr", "add", subnet + ".1/30", "dev", host},
		{"ip", "link", "set", host, "up"},
		{"ip", "-n", n.NetNS, "link", "set", "lo", "up"},
		{"ip", "-n", n.NetNS, "link", "set", node, "name", "eth0"},
		{"ip", "-n", n.NetNS, "addr", "add", n.IP + "/30", "dev", "eth0"},
		{"ip", "-n", n.NetNS, "link", "set", "eth0", "up"},
	} {
		if err := runCmd(ctx, args...); err != nil {
			return nil, err
		}
	}
	if opts.Rate != "none" {
		burst, err := tbfBurst(opts.Rate)
		if err != nil {
			return nil, err
		}
		if err := runCmd(ctx, "ip", "netns", "exec", n.NetNS, "tc", "qdisc", "add", "dev", "lo", "root", "tbf",
			"rate", opts.Rate, "burst", strconv.FormatInt(burst, 10), "latency", "100ms"); err != nil {
			return nil, err
		}
	}
	step("network namespace %s, node IP %s, pulls shaped to %s", n.NetNS, n.IP, opts.Rate)

	// The node agent: ports into the namespace and the device plugin.
	kubeletRoot := filepath.Join(dir, "kubelet")
	if err := os.MkdirAll(DevicePluginDir, 0o755); err != nil {
		return nil, err
	}
	n.state.Registries = append([]string(nil), opts.Registries...)
	agent := agentConfig{
		NetNS:           "/run/netns/" + n.NetNS,
		Forwards:        n.forwards(),
		DevicePluginDir: DevicePluginDir,
		Resource:        "nvidia.com/gpu",
		Devices:         opts.GPUs,
	}
	if err := writeJSONFile(n.state.Agent, agent); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if _, err := n.start(opts, opts.Name+"-agent", self, nil, []string{NodeAgentEnv + "=" + n.state.Agent}, false); err != nil {
		return nil, err
	}
	for _, r := range opts.Registries {
		if err := n.writeHostsToml(r); err != nil {
			return nil, err
		}
	}

	// containerd.
	if err := n.writeContainerdConfig(bins); err != nil {
		return nil, err
	}
	// containerd finds its shim on PATH: ours first, not Debian's 1.6 one.
	path := "PATH=" + filepath.Join(dir, "bin") + ":" + os.Getenv("PATH")
	cd, err := n.start(opts, opts.Name+"-containerd", bins["containerd"], []string{"--config", filepath.Join(dir, "containerd.toml")}, []string{path}, true)
	if err != nil {
		return nil, err
	}
	if err := waitSocket(ctx, cd, n.ContainerdSocket, componentStartTimeout); err != nil {
		return nil, err
	}
	step("containerd %s ready", ContainerdVersion)
	if err := n.importPause(ctx); err != nil {
		return nil, err
	}
	step("pause image %s imported", PauseImage)

	// The kubelet.
	if err := n.makeCgroupRoot(); err != nil {
		return nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	data, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		return nil, err
	}
	if err := n.writeKubeletConfig(); err != nil {
		return nil, err
	}
	labels := []string{
		RealNodeLabel + "=true",
		"modelcar.test/pool=real",
		"node.kubernetes.io/instance-type=real",
		"topology.kubernetes.io/zone=zone-a",
		"nvidia.com/gpu.present=true",
		"nvidia.com/gpu.count=" + strconv.Itoa(opts.GPUs),
		"nvidia.com/gpu.product=FAKE",
	}
	kl, err := n.start(opts, opts.Name+"-kubelet", bins["kubelet"], []string{
		"--config=" + filepath.Join(dir, "kubelet.yaml"),
		"--kubeconfig=" + kubeconfig,
		"--root-dir=" + kubeletRoot,
		"--cert-dir=" + filepath.Join(kubeletRoot, "pki"),
		"--hostname-override=" + opts.Name,
		"--node-ip=" + n.IP,
		"--node-labels=" + strings.Join(labels, ","),
		"--v=2",
	}, nil, true)
	if err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx, kl, opts.GPUs); err != nil {
		return nil, err
	}
	step("Ready with %d nvidia.com/gpu (kubelet %s)", opts.GPUs, KubernetesVersion)
	return n, nil
}

// start runs bin as one of the node's processes; inNode runs it inside the
// node's network namespace (nsenter enters that namespace only: the mount
// namespace stays the host's, so the kubelet's mounts are containerd's).
func (n *RealNode) start(opts RealNodeOptions, name, bin string, args, env []string, inNode bool) (*process, error) {
	exe := bin
	if inNode {
		args = append([]string{"--net=/run/netns/" + n.NetNS, "--", bin}, args...)
		var err error
		if bin, err = exec.LookPath("nsenter"); err != nil {
			return nil, err
		}
	}
	p, err := startProcessExe(n.cluster.Dir, name, bin, exe, args, env, opts.Detach)
	if err != nil {
		return nil, err
	}
	n.procs = append(n.procs, p)
	return p, nil
}

// forwards are the agent's ports: the apiserver, then each registry.
func (n *RealNode) forwards() []agentForward {
	fw := []agentForward{{Listen: n.state.APITarget, Target: n.state.APITarget}}
	for _, r := range n.state.Registries {
		fw = append(fw, agentForward{Listen: r, Target: r})
		// Pods reach the registry at the node's IP (initCopy pulls).
		if _, port, err := net.SplitHostPort(r); err == nil {
			fw = append(fw, agentForward{Listen: net.JoinHostPort(n.IP, port), Target: r})
		}
	}
	return fw
}

// AddRegistry lets the node pull from the plain-HTTP registry at host:port
// on the host's 127.0.0.1, as RealNodeOptions.Registries does at start.
func (n *RealNode) AddRegistry(ctx context.Context, hostport string) error {
	for _, r := range n.state.Registries {
		if r == hostport {
			return nil
		}
	}
	n.state.Registries = append(n.state.Registries, hostport)
	if err := writeJSONFile(filepath.Join(n.Dir, nodeStateFile), n.state); err != nil {
		return err
	}
	var agent agentConfig
	if err := readJSONFile(n.state.Agent, &agent); err != nil {
		return err
	}
	agent.Forwards = n.forwards()
	if err := writeJSONFile(n.state.Agent, agent); err != nil {
		return err
	}
	if err := n.writeHostsToml(hostport); err != nil {
		return err
	}
	agentProc := n.process(n.Name + "-agent")
	if agentProc == nil {
		return fmt.Errorf("testcluster: node %s has no agent process", n.Name)
	}
	if err := syscall.Kill(agentProc.pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("testcluster: signalling node agent (pid %d): %w", agentProc.pid, err)
	}
	// Ready when the port answers inside the namespace.
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		c, err := dialInNetNS("/run/netns/"+n.NetNS, hostport)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
}

func (n *RealNode) process(name string) *process {
	for _, p := range n.procs {
		if p.name == name {
			return p
		}
	}
	return nil
}

// PodRegistry is how the node's pods reach the host's registry at hostport
// (127.0.0.1:PORT): the node's IP, same port. containerd pulls by that name
// too, so one reference serves an image volume and a pod's own pull.
func (n *RealNode) PodRegistry(hostport string) string {
	_, port, _ := net.SplitHostPort(hostport)
	return net.JoinHostPort(n.IP, port)
}

// writeHostsToml lets containerd pull over plain HTTP from hostport and
// from its PodRegistry name.
func (n *RealNode) writeHostsToml(hostport string) error {
	if err := n.writeHostsTomlFor(hostport); err != nil {
		return err
	}
	return n.writeHostsTomlFor(n.PodRegistry(hostport))
}

func (n *RealNode) writeHostsTomlFor(hostport string) error {
	d := filepath.Join(n.Dir, "certs.d", hostport)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+hostport, "http://"+hostport)
	return os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(toml), 0o644)
}

// podSubnet is the pods' bridge network; it exists only inside the node's
// namespace, so every node can use the same one.
const podSubnet = "10.214.0.0/24"

func (n *RealNode) writeContainerdConfig(bins map[string]string) error {
	binDir := filepath.Join(n.Dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	// containerd finds its shim as containerd-shim-runc-v2 on PATH.
	shim := filepath.Join(binDir, "containerd-shim-runc-v2")
	_ = os.Remove(shim)
	if err := os.Symlink(bins["containerd-shim-runc-v2"], shim); err != nil {
		return err
	}
	cniConf := filepath.Join(n.Dir, "cni", "net.d")
	if err := os.MkdirAll(cniConf, 0o755); err != nil {
		return err
	}
	conflist := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "modelcar-node",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "mcbr0", "isGateway": true, "isDefaultGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": podSubnet}}},
					"dataDir": filepath.Join(n.Dir, "cni", "ipam"),
				},
			},
		},
	}
	if err := writeJSONFile(filepath.Join(cniConf, "10-modelcar.conflist"), conflist); err != nil {
		return err
	}
	q := strconv.Quote
	cfg := strings.Join([]string{
		`version = 3`,
		`root = ` + q(filepath.Join(n.Dir, "root")),
		`state = ` + q(filepath.Join(n.Dir, "state")),
		`disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]`,
		``,
		`[grpc]`,
		`  address = ` + q(n.ContainerdSocket),
		`[ttrpc]`,
		`  address = ` + q(n.ContainerdSocket+".ttrpc"),
		`[debug]`,
		`  address = ""`,
		`[metrics]`,
		`  address = ""`,
		``,
		`[plugins."io.containerd.internal.v1.opt"]`,
		`  path = ` + q(filepath.Join(n.Dir, "opt")),
		``,
		`[plugins."io.containerd.cri.v1.runtime"]`,
		// This sandbox forbids lowering oom_score_adj: without this every
		// sandbox fails in runc's nsexec.
		`  restrict_oom_score_adj = true`,
		// Pods' network namespaces under the node's state, not the host's
		// /run/netns: teardown unmounts them with the rest.
		`  netns_mounts_under_state_dir = true`,
		`  [plugins."io.containerd.cri.v1.runtime".containerd]`,
		`    default_runtime_name = "runc"`,
		`    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]`,
		`      runtime_type = "io.containerd.runc.v2"`,
		`      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]`,
		`        BinaryName = ` + q(bins["runc"]),
		`        SystemdCgroup = false`,
		`  [plugins."io.containerd.cri.v1.runtime".cni]`,
		`    bin_dirs = ["/usr/lib/cni"]`,
		`    conf_dir = ` + q(cniConf),
		``,
		// The CRI pulls through the transfer service: layers unpack three
		// at a time, as the node-side benchmark (make bench-coldstart
		// COLDSTART_NODE=containerd2) measures and plan's ratios assume.
		`[plugins."io.containerd.transfer.v1.local"]`,
		`  max_concurrent_downloads = 3`,
		`  max_concurrent_unpacks = 3`,
		``,
		`[plugins."io.containerd.cri.v1.images"]`,
		`  snapshotter = "overlayfs"`,
		`  [plugins."io.containerd.cri.v1.images".pinned_images]`,
		`    sandbox = ` + q(PauseImage),
		`  [plugins."io.containerd.cri.v1.images".registry]`,
		`    config_path = ` + q(filepath.Join(n.Dir, "certs.d")),
		``,
		`[plugins."io.containerd.grpc.v1.cri"]`,
		`  stream_server_address = "127.0.0.1"`,
		`  stream_server_port = "0"`,
	}, "\n") + "\n"
	return os.WriteFile(filepath.Join(n.Dir, "containerd.toml"), []byte(cfg), 0o644)
}

func (n *RealNode) writeKubeletConfig() error {
	f, t := false, true
	zero, hundred := int32(0), int32(100)
	resolv := ""
	cfg := kubeletconfig.KubeletConfiguration{
		TypeMeta:                 metav1.TypeMeta{APIVersion: "kubelet.config.k8s.io/v1beta1", Kind: "KubeletConfiguration"},
		ContainerRuntimeEndpoint: "unix://" + n.ContainerdSocket,
		// Only cgroup v1 hierarchies on these machines; no systemd.
		FailCgroupV1:  &f,
		CgroupDriver:  "cgroupfs",
		CgroupRoot:    n.state.CgroupRoot,
		CgroupsPerQOS: &t,
		FailSwapOn:    &f,
		Address:       n.IP,
		// Not the default 127.0.0.1:10248/10255 of a machine's one kubelet.
		HealthzBindAddress: "127.0.0.1",
		ReadOnlyPort:       0,
		PodLogsDir:         filepath.Join(n.Dir, "pod-logs"),
		VolumePluginDir:    filepath.Join(n.Dir, "volume-plugins"),
		ResolverConfig:     &resolv,
		Authentication: kubeletconfig.KubeletAuthentication{
			Anonymous: kubeletconfig.KubeletAnonymousAuthentication{Enabled: &t},
			Webhook:   kubeletconfig.KubeletWebhookAuthentication{Enabled: &f},
		},
		Authorization: kubeletconfig.KubeletAuthorization{Mode: kubeletconfig.KubeletAuthorizationModeAlwaysAllow},
		// Taint as the GPU pool.
		RegisterWithTaints: []corev1.Taint{{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule}},
		// A shared test machine: never evict or garbage-collect images on
		// its disk's account (tests remove images themselves).
		EvictionHard:                  map[string]string{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
		MergeDefaultEvictionSettings:  &f,
		ImageGCHighThresholdPercent:   &hundred,
		ImageMinimumGCAge:             metav1.Duration{Duration: 24 * time.Hour},
		SerializeImagePulls:           &f,
		LocalStorageCapacityIsolation: &t,
		NodeStatusUpdateFrequency:     metav1.Duration{Duration: 2 * time.Second},
		SyncFrequency:                 metav1.Duration{Duration: 5 * time.Second},
		RuntimeRequestTimeout:         metav1.Duration{Duration: 15 * time.Minute},
		MaxPods:                       110,
		ProtectKernelDefaults:         false,
		FeatureGates:                  map[string]bool{"ImageVolume": true},
		ShutdownGracePeriod:           metav1.Duration{},
		StaticPodPath:                 "",
		EventRecordQPS:                &zero,
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.Dir, "kubelet.yaml"), data, 0o644)
}

// cgroupHierarchies lists the mounted cgroup v1 hierarchies (and the v2
// one where present).
func cgroupHierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") && len(fields) > 4 {
				out = append(out, unescapeMount(fields[4]))
			}
		}
	}
	return out, sc.Err()
}

// makeCgroupRoot makes the node's cgroup root in every hierarchy: each real
// node keeps its pods under a root of its own.
func (n *RealNode) makeCgroupRoot() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		if err := os.MkdirAll(filepath.Join(h, n.state.CgroupRoot), 0o755); err != nil {
			return fmt.Errorf("testcluster: cgroup root: %w", err)
		}
	}
	return nil
}

// waitReady waits for the Node to be Ready, without a not-ready taint, and
// offering gpus nvidia.com/gpu.
func (n *RealNode) waitReady(ctx context.Context, kubelet *process, gpus int) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, nodeStartTimeout, true, func(ctx context.Context) (bool, error) {
		if !kubelet.alive() {
			return false, kubelet.exitError()
		}
		node, err := n.cluster.client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if why := unschedulable(node); why != "" {
			last = why + readyMessage(node)
			return false, nil
		}
		q := node.Status.Allocatable["nvidia.com/gpu"]
		if q.Value() != int64(gpus) {
			last = fmt.Sprintf("allocatable nvidia.com/gpu is %s, want %d", q.String(), gpus)
			return false, nil
		}
		return true, nil
	})
	if err != nil && kubelet.alive() {
		return fmt.Errorf("testcluster: node %s not Ready within %v (%s): %w; end of %s:\n%s",
			n.Name, nodeStartTimeout, last, err, kubelet.log, tailFile(kubelet.log, 40))
	}
	return err
}

func readyMessage(node *corev1.Node) string {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Message != "" {
			return ": " + c.Message
		}
	}
	return ""
}

// Stop stops the node's processes, kills what runs in its pods, removes
// its mounts, cgroups, namespace, veth pair and Node object. Stop on a node
// it did not start does nothing.
func (n *RealNode) Stop(ctx context.Context) error {
	if n == nil || !n.owned {
		return nil
	}
	var errs []error
	if err := stopAll(n.procs); err != nil {
		errs = append(errs, err)
	}
	n.procs = nil
	if err := teardownNode(n.Dir); err != nil {
		errs = append(errs, err)
	}
	if n.cluster != nil && n.cluster.client != nil {
		err := n.cluster.client.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting Node %s: %w", n.Name, err))
		}
	}
	return errors.Join(errs...)
}

// teardownNode removes what a real node made outside its processes, from
// its state file in dir: container processes (by its cgroups), shims (by
// their containerd socket), mounts under dir, cgroups, the namespace (and
// with it the veth pair and the qdisc). Its processes must have stopped.
// The directory itself stays (logs); its state file goes last.
func teardownNode(dir string) error {
	var st nodeState
	if err := readJSONFile(filepath.Join(dir, nodeStateFile), &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	if err := killShims(st.Socket); err != nil {
		errs = append(errs, err)
	}
	if st.CgroupRoot != "" {
		if err := removeCgroupTree(st.CgroupRoot); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	for k, v := range st.Sysctls {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s to %s: %w", k, v, err))
		}
	}
	if err := removeHostLeftovers(dir, st); err != nil {
		errs = append(errs, err)
	}
	if st.NetNS != "" {
		if _, err := os.Stat("/run/netns/" + st.NetNS); err == nil {
			if err := runCmd(context.Background(), "ip", "netns", "del", st.NetNS); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if st.HostVeth != "" {
		// Deleting the namespace deletes the pair, a moment later.
		if _, err := net.InterfaceByName(st.HostVeth); err == nil {
			if err := runCmd(context.Background(), "ip", "link", "del", st.HostVeth); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		// The state that teardown reads goes once nothing is left; root
		// and state hold overlay snapshots and pod volumes: gone too.
		for _, sub := range []string{"root", "state", "kubelet", "opt"} {
			if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(filepath.Join(dir, nodeStateFile)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeHostLeftovers removes what the kubelet and the agent left outside
// the node's directory: the device-plugin sockets, the kubelet's links in
// /var/log/containers to the node's pod logs, and the directories that did
// not exist before.
func removeHostLeftovers(dir string, st nodeState) error {
	var errs []error
	for _, sock := range []string{"kubelet.sock", deviceEndpoint, "kubelet_internal_checkpoint"} {
		if err := os.Remove(filepath.Join(DevicePluginDir, sock)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	links, _ := filepath.Glob("/var/log/containers/*.log")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, dir+"/") {
			if err := os.Remove(l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, d := range st.MadeDirs { // deepest first, as listed
		_ = syscall.Rmdir(d) // only when empty
	}
	return errors.Join(errs...)
}

// teardownNodes tears down every real node of the cluster in clusterDir.
func teardownNodes(clusterDir string) error {
	entries, err := os.ReadDir(nodesDir(clusterDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			errs = append(errs, teardownNode(filepath.Join(nodesDir(clusterDir), e.Name())))
		}
	}
	return errors.Join(errs...)
}

// killShims kills the runc shims of the containerd listening on socket: they
// outlive containerd by design.
func killShims(socket string) error {
	if socket == "" {
		return nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	var pids []int
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == socket {
				pids = append(pids, pid)
			}
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return waitGone(pids, 10*time.Second)
}

func waitGone(pids []int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil && !isZombie(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d still running after SIGKILL", pid)
			}
			time.Sleep(20 * time.Millisecond) // polling processes we cannot wait for
		}
	}
	return nil
}

func isZombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// removeCgroupTree kills every process in root's cgroups (every hierarchy)
// and removes the cgroups, deepest first.
func removeCgroupTree(root string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var dirs []string
	var pids []int
	for _, h := range hs {
		top := filepath.Join(h, root)
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			dirs = append(dirs, p)
			if b, err := os.ReadFile(filepath.Join(p, "cgroup.procs")); err == nil {
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						pids = append(pids, pid)
					}
				}
			}
			return nil
		})
	}
	// A frozen cgroup (a paused container) must thaw to die.
	for _, d := range dirs {
		if strings.Contains(d, "/freezer/") {
			_ = os.WriteFile(filepath.Join(d, "freezer.state"), []byte("THAWED"), 0o644)
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := waitGone(pids, 10*time.Second); err != nil {
		return err
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	// A cgroup stays busy for a moment after its last process died (the
	// kernel frees it asynchronously): try again, killing any straggler,
	// for up to 15 s.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var errs []error
		for _, d := range dirs {
			if b, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil {
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
			}
		}
		if len(errs) == 0 || time.Now().After(deadline) {
			return errors.Join(errs...)
		}
		time.Sleep(100 * time.Millisecond) // polling the kernel's release of the cgroups
	}
}

// unmountUnder detaches every mount point at or below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, mp := range points {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && err != syscall.EINVAL && err != syscall.ENOENT {
			return fmt.Errorf("unmounting %s: %w", mp, err)
		}
	}
	return nil
}

var octalEscape = regexp.MustCompile(`\\[0-7]{3}`)

func unescapeMount(s string) string {
	return octalEscape.ReplaceAllStringFunc(s, func(m string) string {
		v, _ := strconv.ParseUint(m[1:], 8, 8)
		return string(rune(v))
	})
}

// freeNodeSubnet picks a /30 of 10.213.0.0/16 that no interface uses and
// returns its first three octets plus the fourth's base ("10.213.7.0" ->
// "10.213.7" with hosts .1 and .2).
func freeNodeSubnet() (string, error) {
	used := map[string]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if v4 := ipn.IP.To4(); v4 != nil && v4[0] == 10 && v4[1] == 213 {
				used[strconv.Itoa(int(v4[2]))] = true
			}
		}
	}
	for i := 1; i < 255; i++ {
		if !used[strconv.Itoa(i)] {
			return "10.213." + strconv.Itoa(i), nil
		}
	}
	return "", errors.New("testcluster: no free node subnet in 10.213.0.0/16")
}

// tbfBurst is a token-bucket burst for rate: 4 ms of bytes, at least 256 KiB
// (the loopback MTU is 64 KiB).
func tbfBurst(rate string) (int64, error) {
	bits, err := ParseRate(rate)
	if err != nil {
		return 0, err
	}
	burst := int64(bits / 8 / 250)
	if burst < 256<<10 {
		burst = 256 << 10
	}
	return burst, nil
}

// ParseRate reads a tc rate (1gbit, 500mbit, 100kbit) as bits per second.
func ParseRate(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		bits   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}} {
		if v, ok := strings.CutSuffix(strings.ToLower(s), u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil && f > 0 {
				return f * u.bits, nil
			}
		}
	}
	return 0, fmt.Errorf("testcluster: rate %q: want a tc rate such as 1gbit or 500mbit, or none", s)
}

// RealNodeAvailable is "" when a real node can start here, else why not.
func RealNodeAvailable() string {
	if os.Geteuid() != 0 {
		return "testcluster: a real node needs root (network namespaces, cgroups, mounts)"
	}
	for _, tool := range []string{"ip", "tc", "nsenter", "ctr"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("testcluster: a real node needs %s (Debian: iproute2, util-linux, containerd): %v", tool, err)
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", plugin)); err != nil {
			return "testcluster: a real node needs the CNI plugin " + plugin + " in /usr/lib/cni (Debian: containernetworking-plugins)"
		}
	}
	if missing := missingTools(RealNodeTools); len(missing) > 0 {
		return fmt.Sprintf("testcluster: %s not built (cache %s); run .ci/install-deps.sh or `go run ./internal/cmd/testcluster build`",
			strings.Join(missing, ", "), binDirOrErr())
	}
	return ""
}

func runCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func waitSocket(ctx context.Context, p *process, path string, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		if !p.alive() {
			return false, p.exitError()
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil && p.alive() {
		return fmt.Errorf("testcluster: %s not listening on %s within %v: %w; end of %s:\n%s", p.name, path, timeout, err, p.log, tailFile(p.log, 30))
	}
	return err
}

func writeJSONFile(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return renameio.WriteFile(path, append(data, '\n'), 0o644, renameio.WithTempDir(filepath.Dir(path)))
}

func readJSONFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// attachRealNode returns the real node called name that the cluster's
// starter made (its state in the cluster's directory), or nil when there is
// none. Stop on it does nothing.
func (c *Cluster) attachRealNode(ctx context.Context, name string) (*RealNode, error) {
	dir := filepath.Join(nodesDir(c.Dir), name)
	var st nodeState
	if err := readJSONFile(filepath.Join(dir, nodeStateFile), &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	node, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("real node %s (state in %s): %w", name, dir, err)
	}
	if why := unschedulable(node); why != "" {
		return nil, fmt.Errorf("real node %s is %s%s", name, why, readyMessage(node))
	}
	procs, err := runningIn(c.Dir)
	if err != nil {
		return nil, err
	}
	n := &RealNode{Name: name, Dir: dir, NetNS: st.NetNS, IP: st.NodeIP, ContainerdSocket: st.Socket, state: st, cluster: c}
	for _, p := range procs {
		if strings.HasPrefix(p.name, name+"-") {
			n.procs = append(n.procs, p)
		}
	}
	return n, nil
}

// RemoveImageScript is a shell command that removes the image whose
// manifest (or index) digest is digest from the node's containerd, every
// name of it (the kubelet's REPO@DIGEST and the CRI's config-digest name),
// and waits until its content is gone: the next start pulls it again, all of
// it. For `modelcar measure run --before-each`.
func (n *RealNode) RemoveImageScript(digest string) string {
	ctr := fmt.Sprintf("ctr --address %s --namespace k8s.io", n.ContainerdSocket)
	return fmt.Sprintf("%s images ls | awk '$3 == %q {print $1}' | xargs -r %s images rm --sync", ctr, digest, ctr)
}

// ChartFlags are the `modelcar deploy` flags that run the vllm-modelcar
// chart on the node with the vLLM stand-in image standin (REPO@sha256:...,
// tag e2e), sized for a small test machine (the server's requests 100m and
// 128Mi, its memory limit memoryLimit, no /dev/shm) and quick to notice
// (probes every second, 5 s to stop).
func (n *RealNode) ChartFlags(standin, memoryLimit string) []string {
	repo, digest, _ := strings.Cut(standin, "@")
	return []string{
		"--set", "vllm.image.repository=" + repo, "--set", "vllm.image.tag=e2e", "--set", "vllm.image.digest=" + digest,
		"--set-string", "nodeSelector.kubernetes\\.io/hostname=" + n.Name,
		"--set", "vllm.resources.requests.cpu=100m", "--set", "vllm.resources.requests.memory=128Mi",
		"--set", "vllm.resources.limits.memory=" + memoryLimit, "--set", "vllm.shm.enabled=false",
		"--set", "vllm.startupProbe.periodSeconds=1", "--set", "vllm.readinessProbe.periodSeconds=1",
		"--set", "warmProbe.resources.requests.cpu=10m", "--set", "terminationGracePeriodSeconds=5",
	}
}
