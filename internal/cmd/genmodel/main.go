// Command genmodel writes a deterministic test model directory with
// internal/testmodel, for benchmarks and manual runs:
//
//	genmodel -out DIR -size 2GiB -shards 4 -seed 1
//
// It prints the directory and the total bytes written.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/modelcar/modelcar/internal/testmodel"
)

func main() {
	out := flag.String("out", "", "directory to write (created; must be empty)")
	size := flag.String("size", "8MiB", "approximate total weight bytes, e.g. 512MiB, 2GiB, 1000000")
	shards := flag.Int("shards", testmodel.DefaultShards, "number of safetensors shards (1: a single model.safetensors)")
	seed := flag.Int64("seed", 1, "seed; the same flags give a byte-identical directory")
	layers := flag.Int("layers", 0, "transformer layers (0: derived from the size)")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: genmodel -out DIR [-size 2GiB] [-shards 4] [-seed 1] [-layers N]")
		os.Exit(2)
	}
	n, err := testmodel.ParseSize(*size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "genmodel:", err)
		os.Exit(2)
	}
	start := time.Now()
	m, err := testmodel.Generate(*out, testmodel.Options{Seed: *seed, TotalSize: n, Shards: *shards, Layers: *layers})
	if err != nil {
		fmt.Fprintln(os.Stderr, "genmodel:", err)
		os.Exit(1)
	}
	d := time.Since(start)
	fmt.Printf("%s\t%d bytes (%.1f MiB, %d files, %.0f MB/s)\n", m.Dir, m.Size, float64(m.Size)/(1<<20), len(m.Files), float64(m.Size)/d.Seconds()/1e6)
}
