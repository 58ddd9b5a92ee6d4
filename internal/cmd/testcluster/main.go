// Command testcluster builds, starts and stops modelcar's local Kubernetes
// test cluster (internal/testcluster): etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kwok with fake GPU and CPU
// nodes, all on 127.0.0.1.
//
//	go run ./internal/cmd/testcluster build            # build missing binaries into the cache
//	go run ./internal/cmd/testcluster up   -dir .work/cluster
//	go run ./internal/cmd/testcluster down -dir .work/cluster
//	go run ./internal/cmd/testcluster status -dir .work/cluster
//
// `up` builds what is missing, starts the cluster with its processes
// detached, and ends with the line `export KUBECONFIG=/abs/path/kubeconfig`
// (also usable as `eval "$(... up | tail -1)"`). `down` stops the processes
// recorded in DIR/pids, in reverse order, and waits for each to exit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/modelcar/modelcar/internal/testcluster"
)

func usage() {
	fmt.Fprintf(os.Stderr, `usage: testcluster build [tool...]
       testcluster up     [-dir DIR] [-real-node [-registry HOST:PORT]... [-rate 1gbit]]
       testcluster down   [-dir DIR]
       testcluster status [-dir DIR]
       testcluster registry-up   [-dir DIR] [-addr 127.0.0.1:5000]
       testcluster registry-down [-dir DIR]

Binaries are cached in $%s or ~/.cache/modelcar-testenv/tools.
`, testcluster.ToolsBinEnv)
}

func main() {
	// A real node's agent is this program started again.
	testcluster.RunNodeAgentIfRequested()
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	dir := fs.String("dir", ".work/cluster", "cluster directory (state, logs, pids, kubeconfig)")
	realNode := fs.Bool("real-node", false, "up: add a real node (kubelet, containerd, runc; root) named real-0 beside the kwok nodes")
	var registries multiFlag
	fs.Var(&registries, "registry", "up -real-node: a plain-HTTP registry on 127.0.0.1 (HOST:PORT) the real node pulls from; repeatable")
	addr := fs.String("addr", "127.0.0.1:5000", "registry-up: the registry's address")
	rate := fs.String("rate", "1gbit", "up -real-node: the real node's pull link rate (tc syntax), or none")
	fs.Usage = usage
	if err := fs.Parse(args); err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd {
	case "build":
		err = build(ctx, fs.Args())
	case "up":
		err = up(ctx, *dir, *realNode, registries, *rate)
	case "down":
		err = down(*dir)
	case "status":
		err = status(ctx, *dir)
	case "registry-up":
		err = testcluster.StartRegistry(ctx, *dir, *addr)
		if err == nil {
			fmt.Fprintf(os.Stderr, "testcluster: registry on http://%s (storage in %s; stop with make registry-down)\n", *addr, *dir)
			fmt.Println(*addr)
		}
	case "registry-down":
		err = testcluster.StopDir(*dir)
	case "-h", "-help", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testcluster %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func build(ctx context.Context, names []string) error {
	root, err := testcluster.FindRepoRoot(".")
	if err != nil {
		return err
	}
	begin := time.Now()
	if err := testcluster.Build(ctx, root, names, os.Stderr); err != nil {
		return err
	}
	dir, _ := testcluster.BinDir()
	fmt.Fprintf(os.Stderr, "testcluster: binaries ready in %s (%v)\n", dir, time.Since(begin).Round(time.Second))
	return nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func up(ctx context.Context, dir string, realNode bool, registries []string, rate string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if running, err := testcluster.Running(abs); err != nil {
		return err
	} else if running {
		// Already up: say so, and where (idempotent for scripts).
		kc := filepath.Join(abs, testcluster.KubeconfigFile)
		if _, err := testcluster.Attach(ctx, kc); err != nil {
			return fmt.Errorf("a cluster runs in %s but is not healthy (%v); run testcluster down -dir %s first", abs, err, dir)
		}
		fmt.Fprintf(os.Stderr, "testcluster: already up in %s\n", abs)
		fmt.Printf("export KUBECONFIG=%s\n", kc)
		return nil
	}
	if root, err := testcluster.FindRepoRoot("."); err == nil {
		// Build what is missing (nothing, usually).
		tools := testcluster.ClusterTools
		if realNode {
			tools = append(append([]string(nil), tools...), testcluster.RealNodeTools...)
		}
		if err := testcluster.Build(ctx, root, tools, os.Stderr); err != nil {
			return err
		}
	}
	if realNode {
		if why := testcluster.RealNodeAvailable(); why != "" {
			return errors.New(why)
		}
	}
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: abs, Log: os.Stderr, Detach: true})
	if err != nil {
		return err
	}
	if realNode {
		if _, err := c.AddRealNode(ctx, testcluster.RealNodeOptions{Registries: registries, Rate: rate, Log: os.Stderr, Detach: true}); err != nil {
			return errors.Join(err, testcluster.StopDir(abs))
		}
	}
	fmt.Fprintf(os.Stderr, "testcluster: up; logs in %s, stop with `make cluster-down` (or testcluster down -dir %s)\n",
		filepath.Join(abs, "logs"), dir)
	fmt.Fprintf(os.Stderr, "testcluster: tests use this cluster when %s=%s\n", testcluster.KubeconfigEnv, c.Kubeconfig)
	fmt.Printf("export KUBECONFIG=%s\n", c.Kubeconfig)
	return nil
}

func down(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := testcluster.StopDir(abs); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "testcluster: stopped (nothing of %s runs)\n", abs)
	return nil
}

func status(ctx context.Context, dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	kc := filepath.Join(abs, testcluster.KubeconfigFile)
	c, err := testcluster.Attach(ctx, kc)
	if err != nil {
		return err
	}
	v, err := c.Client().Discovery().ServerVersion()
	if err != nil {
		return err
	}
	nodes, err := c.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var names []string
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	fmt.Printf("server %s (%s), nodes: %s\nexport KUBECONFIG=%s\n", c.Server, v.GitVersion, strings.Join(names, " "), kc)
	return nil
}
