package testcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/modelcar/modelcar/internal/toolcache"
)

// Pinned versions. Each must equal the version its nested module's go.mod
// requires (TestToolVersionsPinned checks): to move one, `go get -tool
// MODULE/cmd/NAME@VERSION` in the module and change the constant here.
const (
	KubernetesVersion  = "v1.37.2" // k8s.io/kubernetes in tools/k8s
	EtcdVersion        = "v3.6.16" // go.etcd.io/etcd/server/v3 in tools/etcd
	KwokVersion        = "v0.8.0"  // sigs.k8s.io/kwok in tools/kwok
	HelmVersion        = "v3.22.0" // helm.sh/helm/v3 in tools/k8s
	KubeconformVersion = "v0.8.0"  // github.com/yannh/kubeconform in tools/k8s
)

// ToolsBinEnv names the directory the binaries are cached in; when unset it
// is ~/.cache/modelcar-testenv/tools (the directory internal/testenv caches
// its peer tools in; internal/toolcache owns it).
const ToolsBinEnv = toolcache.DirEnv

// Tool is one pinned binary: built with `go build` from Module's nested
// module directory and cached as NAME-VERSION (internal/toolcache).
type Tool struct {
	Name      string // binary name: kube-apiserver
	Version   string // version pinned, part of the cache file name
	ModuleDir string // nested module, relative to the repository root
	Module    string // the module ModuleDir/go.mod pins at Version
	Package   string // main package to build
	LDFlags   string // -ldflags (version stamps; -s -w is added)
	Tags      string // -tags, space-separated
	CGO       bool   // built with cgo (runc: libseccomp)
}

func kubeLDFlags() string {
	major, minor := "1", ""
	if parts := strings.Split(strings.TrimPrefix(KubernetesVersion, "v"), "."); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	var b strings.Builder
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		fmt.Fprintf(&b, " -X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean -X %s.buildDate=1970-01-01T00:00:00Z",
			pkg, KubernetesVersion, pkg, major, pkg, minor, pkg, pkg)
	}
	return strings.TrimSpace(b.String())
}

func helmLDFlags() string {
	minor := strings.Split(strings.TrimPrefix(KubernetesVersion, "v"), ".")[1]
	return "-X helm.sh/helm/v3/internal/version.version=" + HelmVersion +
		" -X helm.sh/helm/v3/internal/version.gitTreeState=clean" +
		" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=" + minor +
		" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=" + minor
}

// Tools lists every binary the cluster and its helpers use, in build order.
var Tools = []Tool{
	{Name: "etcd", Version: EtcdVersion, ModuleDir: "tools/etcd", Module: "go.etcd.io/etcd/server/v3", Package: "go.etcd.io/etcd/server/v3"},
	{Name: "kube-apiserver", Version: KubernetesVersion, ModuleDir: "tools/k8s", Module: "k8s.io/kubernetes", Package: "k8s.io/kubernetes/cmd/kube-apiserver", LDFlags: kubeLDFlags()},
	{Name: "kube-controller-manager", Version: KubernetesVersion, ModuleDir: "tools/k8s", Module: "k8s.io/kubernetes", Package: "k8s.io/kubernetes/cmd/kube-controller-manager", LDFlags: kubeLDFlags()},
	{Name: "kube-scheduler", Version: KubernetesVersion, ModuleDir: "tools/k8s", Module: "k8s.io/kubernetes", Package: "k8s.io/kubernetes/cmd/kube-scheduler", LDFlags: kubeLDFlags()},
	{Name: "kwok", Version: KwokVersion, ModuleDir: "tools/kwok", Module: "sigs.k8s.io/kwok", Package: "sigs.k8s.io/kwok/cmd/kwok"},
	{Name: "kubelet", Version: KubernetesVersion, ModuleDir: "tools/k8s", Module: "k8s.io/kubernetes", Package: "k8s.io/kubernetes/cmd/kubelet", LDFlags: kubeLDFlags()},
	{Name: "containerd", Version: ContainerdVersion, ModuleDir: "tools/coldstart", Module: "github.com/containerd/containerd/v2", Package: "github.com/containerd/containerd/v2/cmd/containerd",
		Tags: "no_btrfs no_devmapper no_zfs", LDFlags: "-X github.com/containerd/containerd/v2/version.Version=" + ContainerdVersion},
	{Name: "containerd-shim-runc-v2", Version: ContainerdVersion, ModuleDir: "tools/coldstart", Module: "github.com/containerd/containerd/v2", Package: "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
		LDFlags: "-X github.com/containerd/containerd/v2/version.Version=" + ContainerdVersion},
	{Name: "runc", Version: RuncVersion, ModuleDir: "tools/runc", Module: "github.com/opencontainers/runc", Package: "github.com/opencontainers/runc",
		Tags: "seccomp", CGO: true, LDFlags: "-X main.version=" + strings.TrimPrefix(RuncVersion, "v")},
	{Name: "pause", Version: PauseVersion, ModuleDir: ".", Package: "./internal/cmd/pause"},
	{Name: "helm", Version: HelmVersion, ModuleDir: "tools/k8s", Module: "helm.sh/helm/v3", Package: "helm.sh/helm/v3/cmd/helm", LDFlags: helmLDFlags()},
	{Name: "kubeconform", Version: KubeconformVersion, ModuleDir: "tools/k8s", Module: "github.com/yannh/kubeconform", Package: "github.com/yannh/kubeconform/cmd/kubeconform", LDFlags: "-X main.version=" + KubeconformVersion},
}

// ClusterTools are the binaries Start runs (helm and kubeconform are only
// for validation).
var ClusterTools = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}

// LookupTool returns the Tool called name.
func LookupTool(name string) (Tool, bool) {
	for _, t := range Tools {
		if t.Name == name {
			return t, true
		}
	}
	return Tool{}, false
}

// BinDir returns the binary cache directory: $MODELCAR_TOOLS_BIN or
// ~/.cache/modelcar-testenv/tools (see internal/toolcache).
func BinDir() (string, error) {
	return toolcache.Dir()
}

// Path returns where t's binary is cached (whether or not it is there).
func (t Tool) Path() (string, error) {
	return toolcache.Path(t.Name, t.Version)
}

// BinaryPath returns the cached binary of the tool called name, or an error
// naming what is missing and how to build it.
func BinaryPath(name string) (string, error) {
	t, ok := LookupTool(name)
	if !ok {
		return "", fmt.Errorf("testcluster: unknown tool %q", name)
	}
	p, err := t.Path()
	if err != nil {
		return "", err
	}
	if !toolcache.IsExecutable(p) {
		return "", fmt.Errorf("testcluster: %s %s is not built (no %s); run .ci/install-deps.sh or `go run ./internal/cmd/testcluster build`", t.Name, t.Version, p)
	}
	return p, nil
}

// missingTools returns the names among names whose binaries are not cached.
func missingTools(names []string) []string {
	var out []string
	for _, n := range names {
		if _, err := BinaryPath(n); err != nil {
			out = append(out, n)
		}
	}
	return out
}

// FindRepoRoot walks up from dir to the directory holding tools/k8s/go.mod
// (the repository root).
func FindRepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; {
		if isRegular(filepath.Join(d, "tools", "k8s", "go.mod")) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no tools/k8s/go.mod above %s", dir)
		}
		d = parent
	}
}

// Build builds every tool in names (all of Tools when names is empty) whose
// binary is not cached yet, from the nested modules under repoRoot, logging
// to w. Builds of one binary are serialised across processes by a lock file
// and installed by rename (toolcache.Install), so concurrent callers build
// it once.
func Build(ctx context.Context, repoRoot string, names []string, w io.Writer) error {
	if len(names) == 0 {
		for _, t := range Tools {
			names = append(names, t.Name)
		}
	}
	goBin, err := toolcache.FindGo()
	if err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	if _, err := BinDir(); err != nil {
		return err
	}
	for _, name := range names {
		t, ok := LookupTool(name)
		if !ok {
			return fmt.Errorf("testcluster: unknown tool %q", name)
		}
		if err := buildTool(ctx, goBin, repoRoot, t, w); err != nil {
			return err
		}
	}
	return nil
}

func buildTool(ctx context.Context, goBin, repoRoot string, t Tool, w io.Writer) error {
	path, err := t.Path()
	if err != nil {
		return err
	}
	var begin time.Time
	built, err := toolcache.Install(path, func(tmp string) error {
		modDir := filepath.Join(repoRoot, t.ModuleDir)
		if t.Module != "" { // "": a program of this repository
			if v, err := toolcache.RequiredVersion(filepath.Join(modDir, "go.mod"), t.Module); err != nil {
				return err
			} else if v != t.Version {
				return fmt.Errorf("testcluster: %s/go.mod pins %s %s, the code expects %s", t.ModuleDir, t.Module, v, t.Version)
			}
		}
		args := []string{"build", "-trimpath", "-ldflags", strings.TrimSpace("-s -w " + t.LDFlags)}
		if t.Tags != "" {
			args = append(args, "-tags", t.Tags)
		}
		args = append(args, "-o", tmp, t.Package)
		fmt.Fprintf(w, "testcluster: building %s %s (go %s in %s)\n", t.Name, t.Version, strings.Join(args[:2], " "), t.ModuleDir)
		begin = time.Now()
		cmd := toolcache.GoCommand(ctx, goBin, modDir, args...)
		if t.CGO {
			cmd.Env = append(cmd.Env, "CGO_ENABLED=1")
		}
		cmd.Stdout = w
		cmd.Stderr = w
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("testcluster: building %s %s in %s: %w", t.Name, t.Version, modDir, err)
		}
		return nil
	})
	if built {
		fmt.Fprintf(w, "testcluster: built %s in %v\n", path, time.Since(begin).Round(time.Second))
	}
	return err
}

func isRegular(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
