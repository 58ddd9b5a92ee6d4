// Command demo runs modelcar's main job end to end on the embedded default
// model, with no external service: it serves go-containerregistry's
// registry (disk storage) in this process on 127.0.0.1, then runs the real
// modelcar binary to pack, push, inspect, mirror through an archive, pull
// and verify, printing each command and its time.
//
// It serves `make demo`; it is not part of the shipped binary.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/modelcar/modelcar/internal/testmodel"
)

func main() {
	bin := flag.String("modelcar", "bin/modelcar", "modelcar binary")
	work := flag.String("work", ".work/demo", "work directory (recreated)")
	size := flag.String("size", "256MiB", "model size")
	flag.Parse()
	must(os.RemoveAll(*work))
	must(os.MkdirAll(*work, 0o755))
	abs := func(p string) string { a, _ := filepath.Abs(filepath.Join(*work, p)); return a }

	n, err := testmodel.ParseSize(*size)
	must(err)
	step("generate the embedded default model (deterministic, seed 1, %s, 4 shards)", *size)
	_, err = testmodel.Generate(abs("model"), testmodel.Options{Seed: 1, TotalSize: n, Shards: 4})
	must(err)

	must(os.MkdirAll(abs("registry"), 0o755))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithBlobHandler(registry.NewDiskBlobHandler(abs("registry"))))}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	reg := ln.Addr().String()
	fmt.Printf("embedded registry (go-containerregistry, disk storage) on %s\n", reg)

	env := append(os.Environ(), "XDG_CACHE_HOME="+abs("cache"), "DOCKER_CONFIG="+abs("docker"))
	run := func(args ...string) string {
		fmt.Printf("\n$ modelcar %s\n", strings.Join(args, " "))
		cmd := exec.Command(*bin, args...)
		cmd.Env, cmd.Stderr = env, os.Stderr
		start := time.Now()
		out, err := cmd.Output()
		fmt.Print(string(out))
		if err != nil {
			fmt.Fprintf(os.Stderr, "demo: modelcar %s: %v\n", args[0], err)
			os.Exit(1)
		}
		fmt.Printf("(%.2fs)\n", time.Since(start).Seconds())
		return strings.TrimSpace(string(out))
	}
	model := abs("model")
	run("pack", model, "--output", "oci:"+abs("oci")+":v1")
	run("pack", model, "--output", "oci:"+abs("oci")+":v1") // unchanged: digest cache
	run("inspect", "oci:"+abs("oci")+":v1")
	pinned := run("push", "oci:"+abs("oci")+":v1", reg+"/models/demo:v1", "--plain-http", "--digest-file", abs("digest"))
	run("inspect", pinned, "--plain-http")
	run("mirror", pinned, "oci-archive:"+abs("airgap.tar"), "--plain-http")
	run("mirror", "oci-archive:"+abs("airgap.tar"), reg+"/airgap/demo:v1", "--plain-http")
	run("pull", reg+"/airgap/demo:v1", abs("pulled"), "--plain-http")
	run("verify", pinned, "--plain-http", "--against", model)
	run("pack", model, "--format", "estargz", "--output", "oci-archive:"+abs("estargz.tar")+":v1")
	run("inspect", "oci-archive:"+abs("estargz.tar")+":v1")
	fmt.Printf("\ndemo done: the digest %s survived pack, push, an archive hop and a second repository\n", pinned[strings.Index(pinned, "@")+1:])
}

func step(f string, a ...any) { fmt.Printf("\n== "+f+"\n", a...) }

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
