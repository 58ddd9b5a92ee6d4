package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	units "github.com/docker/go-units"
	"github.com/google/renameio/v2"
)

// process is a daemon this program started; it is stopped by its PID only.
type process struct {
	name string
	pid  int
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// processes stops, in reverse start order, every daemon that is still running.
type processes struct {
	mu   sync.Mutex
	list []*process
}

func (ps *processes) start(name, logPath string, cmd *exec.Cmd) (*process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

func (ps *processes) stopAll() {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i].stop(15 * time.Second)
	}
}

// waitFor polls ready until it succeeds, the process exits or timeout passes.
func waitFor(ctx context.Context, p *process, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s (pid %d) exited during startup: %v\n%s", p.name, p.pid, p.err, tail(p.log, 30))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s (pid %d) not ready after %s: %v\n%s", p.name, p.pid, timeout, err, tail(p.log, 30))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

type registry struct {
	host string
	proc *process
}

// startRegistry runs docker-registry with filesystem storage on
// 127.0.0.1:5000 of the benchmark's namespace (the port is free there: the
// namespace is new).
func startRegistry(ctx context.Context, ps *processes, bin, dir string) (*registry, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	host := "127.0.0.1:5000"
	cfg := strings.Join([]string{
		`version: 0.1`,
		`log:`,
		`  level: warn`,
		`storage:`,
		`  filesystem:`,
		`    rootdirectory: ` + strconv.Quote(filepath.Join(dir, "data")),
		`  maintenance:`,
		`    uploadpurging:`,
		`      enabled: false`,
		`http:`,
		`  addr: ` + strconv.Quote(host),
	}, "\n") + "\n"
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Env = withoutPrefix(os.Environ(), "REGISTRY_")
	p, err := ps.start("docker-registry", filepath.Join(dir, "registry.log"), cmd)
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, p, 30*time.Second, func() error {
		resp, err := http.Get("http://" + host + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &registry{host: host, proc: p}, nil
}

func withoutPrefix(env []string, prefix string) []string {
	var out []string
	for _, kv := range env {
		if !strings.HasPrefix(kv, prefix) {
			out = append(out, kv)
		}
	}
	return out
}

// node is one cold node: a fresh containerd with an empty content store and
// snapshotters, plus the stargz snapshotter as its "stargz" proxy plugin.
type node struct {
	dir        string
	socket     string
	containerd *process
	stargz     *process
}

func startNode(ctx context.Context, ps *processes, c config, f format, dir string) (*node, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n := &node{dir: dir, socket: filepath.Join(dir, "containerd.sock")}
	sgSock := filepath.Join(dir, "stargz.sock")
	sgCfg := filepath.Join(dir, "stargz.toml")
	sgBody := []byte(stargzConfig)
	if f.prefetchAll {
		sgBody = append(sgBody, stargzAsyncPrefetch...)
	}
	if c.sgConfig != "" {
		b, err := os.ReadFile(c.sgConfig)
		if err != nil {
			return nil, err
		}
		sgBody = b
	}
	if err := os.WriteFile(sgCfg, sgBody, 0o644); err != nil {
		return nil, err
	}
	sg, err := ps.start("stargz-grpc", filepath.Join(dir, "stargz.log"),
		exec.Command(c.stargz, "-address", sgSock, "-root", filepath.Join(dir, "stargz"), "-config", sgCfg, "-log-level", "warn"))
	if err != nil {
		return nil, err
	}
	n.stargz = sg
	if err := waitFor(ctx, sg, 30*time.Second, func() error { return dial(sgSock) }); err != nil {
		return nil, err
	}

	q := strconv.Quote
	cfg := strings.Join([]string{
		`version = 2`,
		`root = ` + q(filepath.Join(dir, "root")),
		`state = ` + q(filepath.Join(dir, "state")),
		`disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]`,
		`[grpc]`,
		`  address = ` + q(n.socket),
		`[ttrpc]`,
		`  address = ` + q(n.socket+".ttrpc"),
		`[debug]`,
		`  address = ""`,
		`  level = "warn"`,
		`[metrics]`,
		`  address = ""`,
		`[plugins."io.containerd.internal.v1.opt"]`,
		`  path = ` + q(filepath.Join(dir, "opt")),
		`[proxy_plugins.stargz]`,
		`  type = "snapshot"`,
		`  address = ` + q(sgSock),
	}, "\n") + "\n"
	cfgPath := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cd, err := ps.start("containerd", filepath.Join(dir, "containerd.log"), exec.Command(c.containerd, "--config", cfgPath))
	if err != nil {
		return nil, err
	}
	n.containerd = cd
	if err := waitFor(ctx, cd, 30*time.Second, func() error { return dial(n.socket) }); err != nil {
		return nil, err
	}
	return n, nil
}

// stargzConfig is the snapshotter configuration the benchmark measures: the
// upstream defaults, spelled out where they matter to the result.
const stargzConfig = `
# Prefetch the prioritized files' landmark (pack puts the small files there)
# before the mount returns, for up to 10 s.
prefetch_timeout_sec = 10
# Fetch the rest of each layer in the background after the mount.
no_background_fetch = false
`

// stargzAsyncPrefetch lets the container start while prefetches larger
// than 1 MiB go on in the background: the weight layers of a --prefetch all
// image whatever the model's size (a threshold near the layer size would
// hold the start for them), and a large tokenizer layer too, whose files
// are then read on demand, a chunk at a time, as fast.
const stargzAsyncPrefetch = `prefetch_async_size = 1048576
`

// containerdVersion is what `containerd --version` prints, less the
// program name and commit.
func containerdVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "containerd (version unknown)"
	}
	f := strings.Fields(string(out))
	if len(f) >= 3 {
		return "containerd " + f[2]
	}
	return strings.TrimSpace(string(out))
}

func dial(sock string) error {
	conn, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}

// stop stops both daemons, unmounts whatever the snapshotters left mounted
// under the node's directory and removes it.
func (n *node) stop(keep bool) error {
	n.containerd.stop(15 * time.Second)
	n.stargz.stop(15 * time.Second)
	if err := unmountUnder(n.dir); err != nil {
		return err
	}
	if keep {
		return nil
	}
	return os.RemoveAll(n.dir)
}

// unmountUnder detaches every mount point below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
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

var octal = regexp.MustCompile(`\\[0-7]{3}`)

func unescapeMount(s string) string {
	return octal.ReplaceAllStringFunc(s, func(m string) string {
		v, _ := strconv.ParseUint(m[1:], 8, 8)
		return string(rune(v))
	})
}

// cpuSeconds is the user+system CPU time of a process so far.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

// loBytes is the number of bytes the namespace's loopback has carried.
func loBytes() int64 {
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || name != "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			return v
		}
	}
	return 0
}

// dropCaches writes dirty pages and drops the page cache, so every cold
// start reads from the registry and disk, not from memory.
func dropCaches() error {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

type shapedLink struct {
	mbit float64
}

// shapeLink puts a token-bucket filter on the namespace's loopback. The
// burst is generous enough for the 64 KiB loopback MTU at any rate.
func shapeLink(ctx context.Context, rate string) (*shapedLink, error) {
	mbit, err := parseRate(rate)
	if err != nil {
		return nil, err
	}
	burst := int64(mbit * 1e6 / 8 / 250) // 4 ms worth of bytes
	if burst < 256<<10 {
		burst = 256 << 10
	}
	if err := run(ctx, "tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate,
		"burst", strconv.FormatInt(burst, 10), "latency", "100ms"); err != nil {
		return nil, err
	}
	return &shapedLink{mbit: mbit}, nil
}

func (l *shapedLink) remove() {
	if err := run(context.Background(), "tc", "qdisc", "del", "dev", "lo", "root"); err != nil {
		logf("%v", err)
	}
}

// parseRate reads a tc rate (e.g. 1gbit, 500mbit) as megabits per second.
func parseRate(s string) (float64, error) {
	units := []struct {
		suffix string
		mbit   float64
	}{{"gbit", 1000}, {"mbit", 1}, {"kbit", 0.001}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(strings.ToLower(s), u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil && f > 0 {
				return f * u.mbit, nil
			}
		}
	}
	return 0, fmt.Errorf("-rate %q: want a tc rate such as 1gbit or 500mbit", s)
}

func machineDescription() string {
	desc := fmt.Sprintf("%d CPUs", runtime.NumCPU())
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				desc += ", " + strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			desc += fmt.Sprintf(", %d GiB RAM", kb>>20)
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		desc += ", Linux " + utsString(u.Release[:])
	}
	return desc
}

func utsString(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// writeFileAtomic writes a report whole: renameio (a temporary file
// beside path, fsynced, renamed over it), in a directory made if missing.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return renameio.WriteFile(path, data, 0o644, renameio.WithTempDir(filepath.Dir(path)))
}

// humanBytes formats n for the report as it has always read ("1.50 GiB",
// "512 B"): go-units' binary units, two decimals and a space, where its
// BytesSize would print "1.5GiB".
func humanBytes(n int64) string {
	if n < units.KiB {
		return fmt.Sprintf("%d B", n)
	}
	return units.CustomSize("%.2f %s", float64(n), units.KiB, []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"})
}
