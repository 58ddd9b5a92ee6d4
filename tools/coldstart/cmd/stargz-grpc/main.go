// Command stargz-grpc is the stargz snapshotter daemon the cold-start
// benchmark runs as containerd's "stargz" proxy snapshotter: a small main over
// stargz-snapshotter's service package (the upstream daemon is not
// go-installable), serving the snapshots gRPC API on a unix socket until
// SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"github.com/containerd/stargz-snapshotter/service"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "", "unix socket to serve the snapshots API on (required)")
	root := flag.String("root", "", "state directory of the snapshotter (required)")
	configPath := flag.String("config", "", "optional TOML configuration (stargz-snapshotter's config.toml format)")
	logLevel := flag.String("log-level", "info", "log level")
	flag.Parse()
	if err := run(*address, *root, *configPath, *logLevel); err != nil {
		fmt.Fprintln(os.Stderr, "stargz-grpc:", err)
		os.Exit(1)
	}
}

func run(address, root, configPath, level string) error {
	if address == "" || root == "" {
		return errors.New("-address and -root are required")
	}
	if err := log.SetLevel(level); err != nil {
		return err
	}
	var cfg service.Config
	if configPath != "" {
		b, err := os.ReadFile(configPath)
		if err != nil {
			return err
		}
		if err := toml.Unmarshal(b, &cfg); err != nil {
			return fmt.Errorf("%s: %w", configPath, err)
		}
	}
	ctx := log.WithLogger(context.Background(), log.L)
	sn, err := service.NewStargzSnapshotterService(ctx, root, &cfg)
	if err != nil {
		return err
	}
	defer sn.Close()

	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return err
	}
	if err := os.RemoveAll(address); err != nil {
		return err
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.L.Infof("stargz-grpc: %v, stopping", s)
		srv.Stop()
		return nil
	case err := <-errc:
		return err
	}
}
