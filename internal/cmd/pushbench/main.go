// Command pushbench measures modelcar's delivery commands (push, pull,
// mirror) against the registry's own ingest limit and against peer clients
// (crane, oras, skopeo) on loopback, in one run. It generates (or reuses) a
// deterministic multi-shard model, packs it once into an OCI layout with the
// modelcar binary, then for every measurement starts Debian's docker-registry
// (distribution 2.8) with empty filesystem storage on 127.0.0.1, so no run
// finds a blob a previous one left, and reports the best of -runs after a
// warm-up run: seconds, MB/s over the image's blob bytes, the ratio to the
// best peer of the same operation, the ratio to the raw ingest limit (for
// pushes), the client's peak RSS and the PATCH requests the registry saw.
//
// The raw ingest limit is what the registry takes from a client that does
// nothing but send bytes: one monolithic upload (POST, then PUT ?digest= with
// the file as body) of the largest layer, and the same for every layer at
// once, done in this process with net/http.
//
// Every push is checked: the registry's Docker-Content-Digest for the pushed
// tag must equal the packed manifest digest, and pulls and mirrors must have
// written that manifest. A mismatch stops the run.
//
// It serves `make bench`; it is not part of the shipped binary.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
)

// row is one measurement: the best of its runs.
type row struct {
	Group         string         `json:"group"` // ingest, push, pull, mirror
	Name          string         `json:"name"`
	Skipped       string         `json:"skipped,omitempty"`
	Seconds       float64        `json:"seconds"`
	MBps          float64        `json:"MBps"`
	VsPeer        float64        `json:"ratioToBestPeer,omitempty"`
	VsRaw         float64        `json:"ratioToRawIngest,omitempty"`
	PeakRSSMB     float64        `json:"peakRSSMiB"`
	RegistryRSSMB float64        `json:"registryPeakRSSMiB,omitempty"`
	Requests      map[string]int `json:"registryRequests,omitempty"`
	AllSeconds    []float64      `json:"allSeconds,omitempty"`

	peer bool // a peer tool: counts for the best-peer ratio
}

// image is the packed layout pushbench pushes.
type image struct {
	layout   string
	tag      string
	digest   string // manifest digest
	blobs    []ocispec.Descriptor
	layers   []ocispec.Descriptor
	total    int64 // config + layers
	manifest int64
}

func main() {
	var (
		bin     = flag.String("modelcar", "bin/modelcar", "modelcar binary")
		work    = flag.String("work", ".work/pushbench", "work directory (model, layout and registry storage)")
		sizeS   = flag.String("size", "2GiB", "model size")
		shards  = flag.Int("shards", 4, "safetensors shards")
		runs    = flag.Int("runs", 3, "runs per measurement; the best is reported")
		warmups = flag.Int("warmup", 1, "untimed runs before each measurement")
		jsonOut = flag.String("json", "", "also write results as JSON to this file")
		only    = flag.String("only", "", "comma-separated groups to run (ingest,push,pull,mirror); default all")
	)
	flag.Parse()
	size, err := testmodel.ParseSize(*sizeS)
	check(err)
	groups := map[string]bool{"ingest": true, "push": true, "pull": true, "mirror": true}
	if *only != "" {
		groups = map[string]bool{}
		for _, g := range strings.Split(*only, ",") {
			groups[strings.TrimSpace(g)] = true
		}
	}
	*work, err = filepath.Abs(*work)
	check(err)
	mc, err := filepath.Abs(*bin)
	check(err)
	if !isExecutable(mc) {
		check(fmt.Errorf("%s not found: run `make build` first", *bin))
	}
	t := findTools()
	if t.registry == "" {
		check(errors.New("docker-registry not found (run .ci/install-deps.sh)"))
	}

	model := filepath.Join(*work, fmt.Sprintf("model-%s-%d", *sizeS, *shards))
	if _, err := os.Stat(filepath.Join(model, "config.json")); err != nil {
		os.RemoveAll(model)
		fmt.Fprintf(os.Stderr, "generating %s model in %s\n", *sizeS, model)
		_, err := testmodel.Generate(model, testmodel.Options{Seed: 1, TotalSize: size, Shards: *shards})
		check(err)
	}
	layout := filepath.Join(*work, fmt.Sprintf("layout-%s-%d", *sizeS, *shards))
	img, err := readLayout(layout, "v1")
	if err != nil {
		os.RemoveAll(layout)
		fmt.Fprintf(os.Stderr, "packing %s into %s\n", model, layout)
		cache := filepath.Join(*work, "pack-cache")
		out, err := exec.Command(mc, "pack", model, "--output", "oci:"+layout+":v1", "--quiet", "--cache-dir", cache).CombinedOutput()
		if err != nil {
			check(fmt.Errorf("modelcar pack: %v\n%s", err, out))
		}
		os.RemoveAll(cache)
		img, err = readLayout(layout, "v1")
		check(err)
	}
	scratch := filepath.Join(*work, "runs")
	check(os.RemoveAll(scratch))
	check(os.MkdirAll(scratch, 0o755))
	defer os.RemoveAll(scratch)

	var largest ocispec.Descriptor
	for _, l := range img.layers {
		if l.Size > largest.Size {
			largest = l
		}
	}
	fmt.Printf("model: %s; image: %d layers, %.0f MiB of blobs (largest layer %.0f MiB), manifest %s; CPUs: %d\n",
		model, len(img.layers), float64(img.total)/(1<<20), float64(largest.Size)/(1<<20), img.digest, runtime.NumCPU())
	fmt.Printf("registry: %s (fresh process and empty storage for every push); peers: %s\n",
		t.registry, t.describe())
	fmt.Printf("best of %d runs each, after %d warm-up run(s); MB/s = 10^6 bytes/s over %d blob bytes\n\n", *runs, *warmups, img.total)

	b := &bench{tools: t, modelcar: mc, img: img, scratch: scratch, runs: *runs, warmups: *warmups}
	var rows []row
	header := func() {
		fmt.Printf("%-32s %8s %9s %8s %8s %10s %6s\n", "run", "seconds", "MB/s", "vs peer", "vs raw", "peak RSS", "PATCH")
	}
	header()

	// 1. The registry's raw ingest limits.
	var rawLimit float64
	if groups["ingest"] || groups["push"] {
		single := b.measure(op{group: "ingest", name: "raw ingest: 1 PUT (largest)", fresh: true, bytes: largest.Size,
			run: func(c *runCtx) (result, error) { return rawUpload(c.reg, []ocispec.Descriptor{largest}, img.layout) }})
		par := b.measure(op{group: "ingest", name: fmt.Sprintf("raw ingest: %d PUTs at once", len(img.layers)), fresh: true, bytes: sum(img.layers),
			run: func(c *runCtx) (result, error) { return rawUpload(c.reg, img.layers, img.layout) }})
		rawLimit = max(single.MBps, par.MBps)
		for _, r := range []*row{&single, &par} {
			r.VsRaw = r.MBps / rawLimit
			printRow(*r)
			rows = append(rows, *r)
		}
	}

	// 2-5. Pushes from the layout, each into an empty registry.
	if groups["push"] {
		layoutRef := "oci:" + img.layout + ":" + img.tag
		ops := []op{
			{name: "modelcar push", tool: mc, args: func(c *runCtx) []string {
				return []string{"push", layoutRef, c.reg.addr + "/bench/m:v1", "--plain-http", "-q"}
			}, verify: "bench/m:v1"},
			{name: "modelcar push --chunk-size 1GiB", tool: mc, args: func(c *runCtx) []string {
				return []string{"push", layoutRef, c.reg.addr + "/bench/m:v1", "--plain-http", "-q", "--chunk-size", "1GiB"}
			}, verify: "bench/m:v1"},
			{name: "modelcar push --monolithic", tool: mc, args: func(c *runCtx) []string {
				return []string{"push", layoutRef, c.reg.addr + "/bench/m:v1", "--plain-http", "-q", "--monolithic"}
			}, verify: "bench/m:v1"},
			{name: "crane push", tool: t.crane, missing: "crane", peer: true, args: func(c *runCtx) []string {
				return []string{"push", img.layout, c.reg.addr + "/bench/crane:v1", "--insecure"}
			}, verify: "bench/crane:v1"},
			{name: "oras cp", tool: t.oras, missing: "oras", peer: true, args: func(c *runCtx) []string {
				return []string{"cp", "--from-oci-layout", img.layout + ":" + img.tag, c.reg.addr + "/bench/oras:v1", "--to-plain-http", "--no-tty"}
			}, verify: "bench/oras:v1"},
			{name: "skopeo copy", tool: t.skopeo, missing: "skopeo", peer: true, skopeo: true, args: func(c *runCtx) []string {
				return []string{"copy", "--dest-tls-verify=false", "--preserve-digests", "oci:" + img.layout + ":" + img.tag, "docker://" + c.reg.addr + "/bench/skopeo:v1"}
			}, verify: "bench/skopeo:v1"},
		}
		rows = append(rows, b.group("push", ops, rawLimit)...)
	}

	// 6-7. Pulls and mirrors from one registry holding the image.
	if groups["pull"] || groups["mirror"] {
		reg, err := startRegistry(t.registry, filepath.Join(scratch, "source-registry"))
		check(err)
		defer reg.stop()
		src := reg.addr + "/bench/m:v1"
		env, dir := sandbox(filepath.Join(scratch, "seed"))
		_, err = runTool(env, mc, "push", "oci:"+img.layout+":"+img.tag, src, "--plain-http", "-q")
		check(err)
		os.RemoveAll(dir)
		check(verifyPush(reg, "bench/m:v1", img.digest))
		b.source = reg
		if groups["pull"] {
			ops := []op{
				{name: "modelcar pull", tool: mc, args: func(c *runCtx) []string {
					return []string{"pull", src, filepath.Join(c.dir, "out"), "--plain-http", "-q"}
				}, check: func(c *runCtx, stdout []byte) error { return want(img.digest, string(stdout), "stdout") }},
				{name: "crane pull --format oci", tool: t.crane, missing: "crane", peer: true, args: func(c *runCtx) []string {
					return []string{"pull", "--format", "oci", "--insecure", src, filepath.Join(c.dir, "out")}
				}, check: func(c *runCtx, _ []byte) error {
					ix, err := os.ReadFile(filepath.Join(c.dir, "out", "index.json"))
					return errors.Join(err, want(img.digest, string(ix), "index.json"))
				}},
				// The peer that produces what modelcar pull does, the
				// model files in a directory: crane's flattened
				// filesystem stream into GNU tar.
				{name: "crane export | tar -x", tool: shell(t.crane), missing: "crane", peer: true, args: func(c *runCtx) []string {
					out := filepath.Join(c.dir, "out")
					return []string{"-c", `set -o pipefail; mkdir -p "$3" && "$1" export --insecure "$2" - | tar -xf - -C "$3"`, "sh", t.crane, src, out}
				}, check: func(c *runCtx, _ []byte) error {
					_, err := os.Stat(filepath.Join(c.dir, "out", "models", "config.json"))
					return err
				}},
				{name: "skopeo copy dir:", tool: t.skopeo, missing: "skopeo", peer: true, skopeo: true, args: func(c *runCtx) []string {
					return []string{"copy", "--src-tls-verify=false", "--preserve-digests", "docker://" + src, "dir:" + filepath.Join(c.dir, "out")}
				}, check: func(c *runCtx, _ []byte) error {
					m, err := os.ReadFile(filepath.Join(c.dir, "out", "manifest.json"))
					return errors.Join(err, want(img.digest, sha256Digest(m), "manifest.json"))
				}},
			}
			rows = append(rows, b.group("pull", ops, 0)...)
		}
		if groups["mirror"] {
			archiveCheck := func(c *runCtx, _ []byte) error {
				ix, err := archiveIndex(filepath.Join(c.dir, "out.tar"))
				return errors.Join(err, want(img.digest, string(ix), "the archive's index.json"))
			}
			ops := []op{
				{name: "modelcar mirror oci-archive:", tool: mc, args: func(c *runCtx) []string {
					return []string{"mirror", src, "oci-archive:" + filepath.Join(c.dir, "out.tar"), "--plain-http", "-q"}
				}, check: archiveCheck},
				{name: "skopeo copy oci-archive:", tool: t.skopeo, missing: "skopeo", peer: true, skopeo: true, args: func(c *runCtx) []string {
					return []string{"copy", "--src-tls-verify=false", "--preserve-digests", "docker://" + src, "oci-archive:" + filepath.Join(c.dir, "out.tar")}
				}, check: archiveCheck},
			}
			rows = append(rows, b.group("mirror", ops, 0)...)
		}
	}

	if *jsonOut != "" {
		out, _ := json.MarshalIndent(map[string]any{
			"modelDir": model, "blobBytes": img.total, "layers": len(img.layers), "largestLayerBytes": largest.Size,
			"manifestDigest": img.digest, "rawIngestLimitMBps": rawLimit, "cpus": runtime.NumCPU(), "runs": rows,
		}, "", "  ")
		check(os.MkdirAll(filepath.Dir(*jsonOut), 0o755))
		check(os.WriteFile(*jsonOut, out, 0o644))
	}
}

// shell is bash when the tool it runs is there, "" (missing) when not.
func shell(tool string) string {
	if tool == "" {
		return ""
	}
	return "/bin/bash"
}

// op is one measured operation.
type op struct {
	group, name string
	// tool is the binary to run with args (empty: missing, see missing);
	// run replaces both for in-process measurements.
	tool    string
	missing string
	args    func(*runCtx) []string
	run     func(*runCtx) (result, error)
	peer    bool
	skopeo  bool  // add skopeo's sandbox flags
	fresh   bool  // needs a fresh registry (pushes)
	bytes   int64 // bytes the MB/s is over; 0: the image's blob bytes
	// verify names the repo:tag that must carry the packed digest after the
	// run; check inspects what a pull or mirror wrote.
	verify string
	check  func(c *runCtx, stdout []byte) error
}

// runCtx is what one run of an op works with.
type runCtx struct {
	reg *registry
	dir string // scratch directory, removed after the run
	env []string
}

// result is one run's measurement.
type result struct {
	seconds float64
	rssMB   float64
	stdout  []byte
}

type bench struct {
	tools    tools
	modelcar string
	img      *image
	scratch  string
	source   *registry // the registry pulls and mirrors read from
	runs     int
	warmups  int
	seq      int
}

// group measures ops, then fills in the ratios and prints the rows.
func (b *bench) group(name string, ops []op, rawLimit float64) []row {
	var rows []row
	for _, o := range ops {
		o.group = name
		if name == "push" {
			o.fresh = true
		}
		rows = append(rows, b.measure(o))
	}
	var best float64
	for _, r := range rows {
		if r.peer && r.Skipped == "" {
			best = max(best, r.MBps)
		}
	}
	for i := range rows {
		r := &rows[i]
		if r.Skipped == "" {
			if best > 0 {
				r.VsPeer = r.MBps / best
			}
			if rawLimit > 0 {
				r.VsRaw = r.MBps / rawLimit
			}
		}
		printRow(*r)
	}
	return rows
}

// measure runs o warm-up times untimed, then runs times, and returns the
// fastest run (peak RSS is the largest of all timed runs).
func (b *bench) measure(o op) row {
	r := row{Group: o.group, Name: o.name, peer: o.peer}
	if o.run == nil && o.tool == "" {
		r.Skipped = fmt.Sprintf("skipped: %s not found (run .ci/install-deps.sh)", o.missing)
		return r
	}
	n := o.bytes
	if n == 0 {
		n = b.img.total
	}
	for i := range b.warmups + b.runs {
		warm := i < b.warmups
		label := fmt.Sprintf("%s (run %d/%d)", o.name, i-b.warmups+1, b.runs)
		if warm {
			label = o.name + " (warm-up)"
		}
		res, reqs, regRSS := b.once(o, label)
		if warm {
			continue
		}
		fmt.Fprintf(os.Stderr, "  %s: %.2fs, %.0f MB/s\n", label, res.seconds, float64(n)/res.seconds/1e6)
		r.AllSeconds = append(r.AllSeconds, res.seconds)
		if len(r.AllSeconds) == 1 || res.seconds < r.Seconds {
			r.Seconds = res.seconds
			r.MBps = float64(n) / res.seconds / 1e6
			r.Requests = reqs
		}
		r.PeakRSSMB = max(r.PeakRSSMB, res.rssMB)
		r.RegistryRSSMB = max(r.RegistryRSSMB, regRSS)
	}
	return r
}

// once does one run of o in a fresh scratch directory (and, for pushes, a
// fresh registry), checks its result, and returns it with the registry's
// request counts by method and the registry's peak RSS (pushes only).
// Any failure ends the program.
func (b *bench) once(o op, label string) (result, map[string]int, float64) {
	b.seq++
	dir := filepath.Join(b.scratch, fmt.Sprintf("run-%03d", b.seq))
	env, _ := sandbox(dir)
	defer os.RemoveAll(dir)
	c := &runCtx{reg: b.source, dir: dir, env: env}
	if o.fresh {
		reg, err := startRegistry(b.tools.registry, filepath.Join(dir, "registry"))
		check(err)
		defer reg.stop()
		c.reg = reg
	}
	var res result
	var err error
	if o.run != nil {
		res, err = o.run(c)
	} else {
		args := o.args(c)
		if o.skopeo {
			args = append(skopeoFlags(dir), args...)
		}
		res, err = runTool(env, o.tool, args...)
	}
	if err == nil && o.verify != "" {
		err = verifyPush(c.reg, o.verify, b.img.digest)
	}
	if err == nil && o.check != nil {
		err = o.check(c, res.stdout)
	}
	if err != nil {
		if o.fresh {
			fmt.Fprintf(os.Stderr, "registry log %s (tail):\n%s\n", c.reg.log, tail(c.reg.log, 30))
		}
		check(fmt.Errorf("%s: %w", label, err))
	}
	var reqs map[string]int
	var regRSS float64
	if o.fresh {
		regRSS = c.reg.stop()
		reqs = countRequests(c.reg.log)
	}
	return res, reqs, regRSS
}

func printRow(r row) {
	if r.Skipped != "" {
		fmt.Printf("%-32s %s\n", r.Name, r.Skipped)
		return
	}
	pct := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f%%", v*100)
	}
	rss := "-"
	if r.PeakRSSMB > 0 {
		rss = fmt.Sprintf("%.0f MiB", r.PeakRSSMB)
	}
	patch := "-"
	if r.Requests != nil {
		patch = strconv.Itoa(r.Requests["PATCH"])
	}
	fmt.Printf("%-32s %8.2f %9.0f %8s %8s %10s %6s\n", r.Name, r.Seconds, r.MBps, pct(r.VsPeer), pct(r.VsRaw), rss, patch)
}

// runTool runs bin with args and env, timing it from start to exit, and
// returns its stdout and peak RSS. stderr is passed through.
func runTool(env []string, bin string, args ...string) (result, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	el := time.Since(start).Seconds()
	if err != nil {
		return result{}, fmt.Errorf("%s %s: %v\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	rss := float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) / 1024
	return result{seconds: el, rssMB: rss, stdout: stdout.Bytes()}, nil
}

// sandbox makes dir with a private HOME, XDG directories, docker and
// containers configuration and TMPDIR, and returns the environment that
// points there: no credentials, caches or upload state leak between runs or
// in from the user (skopeo's blob info cache included: as in
// internal/testenv/skopeo.go, _CONTAINERS_ROOTLESS_UID moves it from
// /var/lib/containers/cache to $XDG_DATA_HOME/containers/cache).
func sandbox(dir string) ([]string, string) {
	mk := func(parts ...string) string {
		p := filepath.Join(append([]string{dir}, parts...)...)
		check(os.MkdirAll(p, 0o700))
		return p
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		check(os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	home := mk("home")
	mk("docker")
	mk("registries.d")
	write("docker/config.json", "{}\n")
	write("policy.json", `{"default":[{"type":"insecureAcceptAnything"}]}`+"\n")
	overrides := map[string]string{
		"HOME":                       home,
		"XDG_CACHE_HOME":             mk("home", ".cache"),
		"XDG_CONFIG_HOME":            mk("home", ".config"),
		"XDG_DATA_HOME":              mk("data"),
		"XDG_RUNTIME_DIR":            mk("run"),
		"DOCKER_CONFIG":              filepath.Join(dir, "docker"),
		"TMPDIR":                     mk("tmp"),
		"REGISTRY_AUTH_FILE":         write("auth.json", "{}\n"),
		"CONTAINERS_REGISTRIES_CONF": write("registries.conf", "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n"),
		"CONTAINERS_CONF":            write("containers.conf", ""),
		"_CONTAINERS_ROOTLESS_UID":   "65534",
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := overrides[k]; ok {
			continue
		}
		switch strings.ToUpper(k) {
		case "CONTAINERS_STORAGE_CONF", "CONTAINERS_POLICY_JSON", "_CONTAINERS_USERNS_CONFIGURED", "ORAS_CACHE",
			"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY":
			continue
		}
		env = append(env, kv)
	}
	for k, v := range overrides {
		env = append(env, k+"="+v)
	}
	return env, dir
}

// skopeoFlags are skopeo's global flags for the sandbox in dir.
func skopeoFlags(dir string) []string {
	return []string{"--tmpdir", filepath.Join(dir, "tmp"), "--policy", filepath.Join(dir, "policy.json"),
		"--registries.d", filepath.Join(dir, "registries.d")}
}

// rawUpload uploads each blob of descs from the layout in one monolithic
// request pair, all at once, the way `curl -X PUT --data-binary @blob` would:
// POST /v2/bench/raw/blobs/uploads/, then PUT <Location>&digest=<digest>
// with the file as body and Content-Length set.
func rawUpload(reg *registry, descs []ocispec.Descriptor, layout string) (result, error) {
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: len(descs), DisableCompression: true}}
	defer client.CloseIdleConnections()
	start := time.Now()
	errs := make([]error, len(descs))
	var wg sync.WaitGroup
	for i, d := range descs {
		wg.Go(func() { errs[i] = rawPut(client, reg, d, blobPath(layout, d)) })
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	if err := errors.Join(errs...); err != nil {
		return result{}, err
	}
	return result{seconds: el}, nil
}

func rawPut(client *http.Client, reg *registry, d ocispec.Descriptor, path string) error {
	resp, err := client.Post("http://"+reg.addr+"/v2/bench/raw/blobs/uploads/", "", nil)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST blobs/uploads/: %s", resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return err
	}
	q := loc.Query()
	q.Set("digest", d.Digest.String())
	loc.RawQuery = q.Encode()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPut, loc.String(), f) // the transport closes f
	if err != nil {
		f.Close()
		return err
	}
	req.ContentLength = d.Size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT %s: %s", d.Digest, resp.Status)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != d.Digest.String() {
		return fmt.Errorf("PUT %s: the registry says it stored %q", d.Digest, got)
	}
	return nil
}

// verifyPush checks that repoTag ("repo:tag") in reg resolves to digest.
func verifyPush(reg *registry, repoTag, digest string) error {
	repo, tag, _ := strings.Cut(repoTag, ":")
	req, err := http.NewRequest(http.MethodHead, "http://"+reg.addr+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"}, ", "))
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("DIGEST CHECK FAILED: HEAD %s: %s", req.URL, resp.Status)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != digest {
		return fmt.Errorf("DIGEST CHECK FAILED: %s is %s in the registry, the packed manifest is %s", repoTag, got, digest)
	}
	return nil
}

// want fails unless text mentions digest.
func want(digest, text, where string) error {
	if !strings.Contains(text, digest) {
		return fmt.Errorf("DIGEST CHECK FAILED: %s does not name the packed manifest %s:\n%s", where, digest, text)
	}
	return nil
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// archiveIndex returns the index.json of an oci-archive.
func archiveIndex(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("%s: no index.json: %w", path, err)
		}
		if strings.TrimPrefix(h.Name, "./") == "index.json" {
			return io.ReadAll(io.LimitReader(tr, 1<<20))
		}
	}
}

// readLayout reads the image tagged tag in the OCI layout at dir.
func readLayout(dir, tag string) (*image, error) {
	var ix ocispec.Index
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &ix); err != nil {
		return nil, err
	}
	if len(ix.Manifests) != 1 || ix.Manifests[0].Annotations[ocispec.AnnotationRefName] != tag ||
		ix.Manifests[0].MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("%s: want exactly one image manifest tagged %s", dir, tag)
	}
	md := ix.Manifests[0]
	var m ocispec.Manifest
	b, err = os.ReadFile(blobPath(dir, md))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	img := &image{layout: dir, tag: tag, digest: md.Digest.String(), layers: m.Layers, manifest: md.Size}
	img.blobs = append([]ocispec.Descriptor{m.Config}, m.Layers...)
	for _, d := range img.blobs {
		st, err := os.Stat(blobPath(dir, d))
		if err != nil {
			return nil, err
		}
		if st.Size() != d.Size {
			return nil, fmt.Errorf("%s: blob %s is %d bytes, want %d", dir, d.Digest, st.Size(), d.Size)
		}
		img.total += d.Size
	}
	return img, nil
}

func blobPath(layout string, d ocispec.Descriptor) string {
	return filepath.Join(layout, "blobs", d.Digest.Algorithm().String(), d.Digest.Encoded())
}

func sum(ds []ocispec.Descriptor) int64 {
	var n int64
	for _, d := range ds {
		n += d.Size
	}
	return n
}

// tools are the binaries pushbench compares; empty means not found.
type tools struct {
	registry, crane, oras, skopeo string
}

func findTools() tools {
	var t tools
	t.registry, _ = exec.LookPath("docker-registry")
	if t.registry == "" && isExecutable("/usr/bin/docker-registry") {
		t.registry = "/usr/bin/docker-registry"
	}
	t.skopeo, _ = exec.LookPath("skopeo")
	t.crane = peerBinary("crane", "github.com/google/go-containerregistry", "v0.22.1")
	t.oras = peerBinary("oras", "oras.land/oras", "v1.3.6")
	return t
}

func (t tools) describe() string {
	var s []string
	for _, p := range [][2]string{{"crane", t.crane}, {"oras", t.oras}, {"skopeo", t.skopeo}} {
		if p[1] == "" {
			s = append(s, p[0]+" (not found)")
		} else {
			s = append(s, p[1])
		}
	}
	return strings.Join(s, ", ")
}

// peerBinary finds the pinned peer tool the way internal/testenv does:
// $MODELCAR_TOOLS_BIN/NAME-VERSION, else
// ~/.cache/modelcar-testenv/tools/NAME-VERSION, VERSION being what
// tools/go.mod requires of module (fallback when it cannot be read).
func peerBinary(name, module, fallback string) string {
	dir := os.Getenv("MODELCAR_TOOLS_BIN")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".cache", "modelcar-testenv", "tools")
	}
	version := fallback
	if b, err := os.ReadFile(filepath.Join("tools", "go.mod")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
			if len(f) >= 2 && f[0] == module {
				version = f[1]
			}
		}
	}
	p, err := filepath.Abs(filepath.Join(dir, name+"-"+version))
	if err != nil || !isExecutable(p) {
		return ""
	}
	return p
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// registry is one docker-registry process with filesystem storage in its
// own directory.
type registry struct {
	addr, dir, root, log string
	pid                  int
	done                 chan struct{}
	state                *os.ProcessState
	err                  error
	stopped              bool
}

// startRegistry starts bin (distribution 2.8) on a free 127.0.0.1 port with
// empty storage under dir, as internal/testenv.StartRegistry does, and
// waits until GET /v2/ answers.
func startRegistry(bin, dir string) (*registry, error) {
	r := &registry{dir: dir, root: filepath.Join(dir, "storage"), log: filepath.Join(dir, "registry.log")}
	if err := os.MkdirAll(r.root, 0o755); err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		r.addr = l.Addr().String()
		l.Close()
		cfg := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfg, []byte(testenv.RegistryConfig(r.root, r.addr, "")), 0o644); err != nil {
			return nil, err
		}
		err = r.start(bin, cfg)
		if err == nil {
			return r, nil
		}
		if attempt < 3 && strings.Contains(tail(r.log, 20), "address already in use") {
			continue
		}
		return nil, fmt.Errorf("%v\n%s", err, tail(r.log, 40))
	}
}

func (r *registry) start(bin, cfg string) error {
	logf, err := os.OpenFile(r.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve", cfg)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") { // distribution reads these as config overrides
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr, cmd.Dir = logf, logf, r.dir
	// Own process group, and SIGTERM should pushbench die first. Pdeathsig
	// follows the thread that started the child: keep it locked until Wait.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	r.done = make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		r.err = cmd.Wait()
		r.state = cmd.ProcessState
		close(r.done)
	}()
	err = <-started
	logf.Close()
	if err != nil {
		return err
	}
	r.pid = cmd.Process.Pid
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	begin := time.Now()
	for {
		select {
		case <-r.done:
			return fmt.Errorf("docker-registry (pid %d) exited during startup: %v", r.pid, r.err)
		default:
		}
		resp, err := client.Get("http://" + r.addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Since(begin) > 30*time.Second {
			r.stop()
			return fmt.Errorf("docker-registry (pid %d) did not answer on %s within 30s", r.pid, r.addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM to the registry's PID (SIGKILL after 10s), waits for
// it and returns its peak RSS in MiB. Its directory is left to the caller.
func (r *registry) stop() float64 {
	if !r.stopped {
		r.stopped = true
		syscall.Kill(r.pid, syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(r.pid, syscall.SIGKILL)
			<-r.done
		}
	}
	if r.state == nil {
		return 0
	}
	return float64(r.state.SysUsage().(*syscall.Rusage).Maxrss) / 1024
}

// countRequests counts the requests in a registry log by method, from
// distribution's "response completed" lines.
func countRequests(log string) map[string]int {
	f, err := os.Open(log)
	if err != nil {
		return nil
	}
	defer f.Close()
	n := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "response completed") {
			continue
		}
		_, rest, ok := strings.Cut(line, "http.request.method=")
		if !ok {
			continue
		}
		m, _, _ := strings.Cut(rest, " ")
		n[strings.Trim(m, `"`)]++
	}
	return n
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushbench:", err)
		os.Exit(1)
	}
}
