// Command faultsummary reads the `go test -json` streams of the fault,
// crash and fuzz suites and prints the figures `make test-faults` reports
// (and the README shows): faults injected, survived, failed clearly, bytes
// lost (must be 0), bytes re-sent, and per fuzz target the executions and
// crashes found.
//
// Fault suites log one line per injected fault (t.Logf):
//
//	FAULT name=SUITE/SCENARIO[/OP] outcome=survived|failed-clearly bytes_lost=N [resent_bytes=N] [key=value...]
//
// survived: the operation completed despite the fault (its own retries, or
// a re-run that resumed after a kill -9); failed-clearly: it failed with an
// error that says what failed and left nothing that claims to be complete.
// bytes_lost is what a tag or a file under its final name claims but does
// not hold correctly, as the test measured it; resent_bytes, where the test
// measures it, is what moved beyond the content's size. A FAULT line counts
// only if its test passed: the line of a failed test is reported as
// unverified. Fuzz targets are read from their "fuzz: elapsed: ..., execs:
// N" lines; a failing target is a crash.
//
// With -leaks it also reports what internal/cmd/leakcheck found over the
// same run (secrets checked, leaks found). With -print it only copies the
// test output a stream on stdin carries to stdout, so that `make
// test-faults` shows what it records.
//
// It exits 1 when any test failed, any fuzz target crashed, any byte was
// lost, any credential leaked, or no FAULT line was found; 2 on bad usage
// or unreadable input.
//
// It serves `make test-faults`; it is not part of the shipped binary.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/modelcar/modelcar/internal/human"
)

func main() {
	out := flag.String("o", "", "also write the summary (Markdown) to this file")
	leaks := flag.String("leaks", "", "the result of internal/cmd/leakcheck (-o) over the same run, to report")
	follow := flag.Bool("print", false, "print the test output a `go test -json` stream on stdin carries, as `go test -v` would, and exit")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: faultsummary [-o FILE] [-leaks RESULT] TEST.json...\n       faultsummary -print < TEST.json\n\nSummarises `go test -json` streams of the fault suites (see the package doc).\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *follow {
		if err := printOutput(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "faultsummary: %v\n", err)
			os.Exit(2)
		}
		return
	}
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	s := newSummary()
	for _, f := range flag.Args() {
		if err := s.readFile(f); err != nil {
			fmt.Fprintf(os.Stderr, "faultsummary: %v\n", err)
			os.Exit(2)
		}
	}
	if *leaks != "" {
		if err := s.readLeaks(*leaks); err != nil {
			fmt.Fprintf(os.Stderr, "faultsummary: %v\n", err)
			os.Exit(2)
		}
	}
	text := s.render()
	fmt.Print(text)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "faultsummary: %v\n", err)
			os.Exit(2)
		}
	}
	if !s.ok() {
		os.Exit(1)
	}
}

// event is one line of `go test -json` (test2json).
type event struct {
	Action      string
	Package     string
	ImportPath  string // build-output events
	Test        string
	Output      string
	Elapsed     float64
	FailedBuild string
}

type testKey struct{ pkg, test string }

// fault is one FAULT line.
type fault struct {
	key     testKey
	name    string
	suite   string
	outcome string
	lost    int64
	resent  int64 // -1: not measured
}

// fuzzRun is one fuzz target's run (fuzzing, not only its seed corpus).
type fuzzRun struct {
	key     testKey
	elapsed string
	execs   int64
	failed  bool
	input   string // "Failing input written to ..." path
	// raced: the run failed only with Go's fuzz coordinator race at the
	// -fuzztime deadline (golang/go#75804, fixed in Go 1.27): a bare
	// "context deadline exceeded" and no failing input written. It is not
	// a crash; the summary says so.
	raced bool
}

// leakResult is what internal/cmd/leakcheck found (its -o JSON).
type leakResult struct {
	Secrets, Forms, Files, Lines, Leaks int
	Short                               int // recorded values too short to search for
}

type summary struct {
	leaks     *leakResult        // nil: no leak check reported
	results   map[testKey]string // last of pass, fail, skip
	outputs   map[testKey][]string
	order     []testKey
	faults    []fault
	malformed []string
	fuzz      map[testKey]*fuzzRun
	fuzzOrder []testKey
	gaps      []string
	buildFail []string // packages that failed without a test
	buildOut  []string // build-output lines
}

func newSummary() *summary {
	return &summary{
		results: map[testKey]string{},
		outputs: map[testKey][]string{},
		fuzz:    map[testKey]*fuzzRun{},
	}
}

var (
	faultRE   = regexp.MustCompile(`(?:^|\s)FAULT\s+(\S+=.*)$`)
	fuzzRE    = regexp.MustCompile(`^fuzz: elapsed: (\S+), execs: (\d+) `)
	failingRE = regexp.MustCompile(`Failing input written to (\S+)`)
	gapRE     = regexp.MustCompile(`(?:^|\s)KNOWN GAP: (.*)$`)
)

// maxOutputLines is how much of a failed test's output is kept.
const maxOutputLines = 60

func (s *summary) readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.read(f, path)
}

// readLeaks reads leakcheck's result.
func (s *summary) readLeaks(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("leak check result: %w", err)
	}
	var r leakResult
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("leak check result %s: %w", path, err)
	}
	s.leaks = &r
	return nil
}

// printOutput writes the Output of each event of a test2json stream, and
// lines that are not events as they are.
func printOutput(r io.Reader, w io.Writer) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	bw := bufio.NewWriter(w)
	for sc.Scan() {
		b := sc.Bytes()
		var e event
		if len(b) > 0 && b[0] == '{' && json.Unmarshal(b, &e) == nil {
			bw.WriteString(e.Output)
		} else {
			bw.Write(b)
			bw.WriteByte('\n')
		}
		if e.Action != "output" || strings.HasSuffix(e.Output, "\n") {
			bw.Flush() // a whole line: show it now
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return sc.Err()
}

func (s *summary) read(r io.Reader, name string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 || b[0] != '{' {
			continue // go vet or build noise outside the JSON
		}
		var e event
		if err := json.Unmarshal(b, &e); err != nil {
			return fmt.Errorf("%s:%d: %v", name, line, err)
		}
		s.event(e)
	}
	return sc.Err()
}

func (s *summary) event(e event) {
	k := testKey{e.Package, e.Test}
	switch e.Action {
	case "build-output":
		s.buildOut = append(s.buildOut, strings.TrimRight(e.Output, "\n"))
	case "build-fail":
		s.buildFail = append(s.buildFail, e.ImportPath)
	case "run":
		if _, ok := s.results[k]; !ok && e.Test != "" {
			s.order = append(s.order, k)
			s.results[k] = ""
		}
	case "pass", "fail", "skip":
		if e.Test == "" {
			if e.Action == "fail" && e.FailedBuild == "" && !s.anyTestIn(e.Package) {
				s.buildFail = append(s.buildFail, e.Package)
			}
			return
		}
		if _, ok := s.results[k]; !ok {
			s.order = append(s.order, k)
		}
		s.results[k] = e.Action
		if fr := s.fuzz[k]; fr != nil && e.Action == "fail" {
			if fr.raced && fr.input == "" {
				s.results[k] = "pass"
				return
			}
			fr.failed = true
		}
	case "output":
		text := strings.TrimRight(e.Output, "\n")
		// A test's output, or a package's outside its tests (a TestMain
		// that panicked): the tail is shown if it failed.
		o := append(s.outputs[k], text)
		if len(o) > maxOutputLines {
			o = o[len(o)-maxOutputLines:]
		}
		s.outputs[k] = o
		s.output(k, strings.TrimSpace(text))
	}
}

func (s *summary) anyTestIn(pkg string) bool {
	for k := range s.results {
		if k.pkg == pkg {
			return true
		}
	}
	return false
}

func (s *summary) output(k testKey, text string) {
	if m := faultRE.FindStringSubmatch(text); m != nil {
		f, err := parseFault(m[1])
		if err != nil {
			s.malformed = append(s.malformed, fmt.Sprintf("%s %s: %v: %s", shortPkg(k.pkg), k.test, err, text))
			return
		}
		f.key = k
		s.faults = append(s.faults, f)
		return
	}
	if m := gapRE.FindStringSubmatch(text); m != nil {
		s.gaps = append(s.gaps, fmt.Sprintf("%s (%s)", m[1], k.test))
		return
	}
	if m := fuzzRE.FindStringSubmatch(text); m != nil && strings.HasPrefix(k.test, "Fuzz") {
		fr := s.fuzzRun(k)
		fr.elapsed = m[1]
		if n, err := strconv.ParseInt(m[2], 10, 64); err == nil && n > fr.execs {
			fr.execs = n
		}
		return
	}
	if text == "context deadline exceeded" && strings.HasPrefix(k.test, "Fuzz") {
		s.fuzzRun(k).raced = true
		return
	}
	if m := failingRE.FindStringSubmatch(text); m != nil && strings.HasPrefix(k.test, "Fuzz") {
		fr := s.fuzzRun(k)
		fr.failed = true
		fr.input = m[1]
	}
}

func (s *summary) fuzzRun(k testKey) *fuzzRun {
	fr := s.fuzz[k]
	if fr == nil {
		fr = &fuzzRun{key: k}
		s.fuzz[k] = fr
		s.fuzzOrder = append(s.fuzzOrder, k)
	}
	return fr
}

// parseFault parses the key=value fields after "FAULT".
func parseFault(fields string) (fault, error) {
	f := fault{resent: -1}
	seen := map[string]bool{}
	for _, kv := range strings.Fields(fields) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return f, fmt.Errorf("field %q is not key=value", kv)
		}
		seen[k] = true
		var err error
		switch k {
		case "name":
			f.name = v
		case "outcome":
			f.outcome = v
		case "bytes_lost":
			f.lost, err = strconv.ParseInt(v, 10, 64)
		case "resent_bytes":
			f.resent, err = strconv.ParseInt(v, 10, 64)
		}
		if err != nil {
			return f, fmt.Errorf("%s: %v", k, err)
		}
	}
	for _, k := range []string{"name", "outcome", "bytes_lost"} {
		if !seen[k] {
			return f, fmt.Errorf("no %s=", k)
		}
	}
	if f.outcome != "survived" && f.outcome != "failed-clearly" {
		return f, fmt.Errorf("outcome %q is neither survived nor failed-clearly", f.outcome)
	}
	f.suite, _, _ = strings.Cut(f.name, "/")
	return f, nil
}

// suites describes the fault suites known to the README; others are
// listed by name.
var suites = []struct{ name, what string }{
	{"toxi", "toxiproxy (TCP): latency+jitter, bandwidth, slicer, reset mid-blob, stall, stall for good; push, pull, mirror"},
	{"http", "HTTP proxy: reset mid-chunk, 503 burst, 500 on commit, 429 Retry-After, chunks refused, 403; a stall of each request kind of push, pull, mirror, once and for good"},
	{"extra", "registry restart mid-push, credential revoked mid-push, corrupt blob at the source"},
	{"kill9", "kill -9 with a chunk in flight, then resume"},
	{"crash", "kill -9 of pack, push, pull, mirror at seeded points, then re-run"},
	{"hostile", "crafted inputs: model symlinks leading outside the model, deeply nested and oversized JSON, a registry that echoes credentials in its errors, reports with negative seconds for measure compare and plan, a measure bundle with 512 MiB of events, then a 512 MiB log (peak RSS measured)"},
	{"untrusted", "sources that lie, read by pull, inspect, mirror, verify: zstd window bombs (peak RSS measured), manifests and configs over the limit, blobs streamed past or described with a wrong size, manifests whose media type lies, layout files that are pipes, devices or huge; layers with a name over NAME_MAX or a file where another layer made a directory"},
}

type row struct {
	suite, what                      string
	n, survived, clearly, unverified int
	lost                             int64
	resent                           int64
	resentMeasured                   int
}

func (s *summary) rows() ([]row, row) {
	by := map[string]*row{}
	var names []string
	for _, f := range s.faults {
		r := by[f.suite]
		if r == nil {
			r = &row{suite: f.suite}
			by[f.suite] = r
			names = append(names, f.suite)
		}
		r.n++
		if s.results[f.key] != "pass" {
			r.unverified++
			continue
		}
		switch f.outcome {
		case "survived":
			r.survived++
		case "failed-clearly":
			r.clearly++
		}
		r.lost += f.lost
		if f.resent >= 0 {
			r.resent += f.resent
			r.resentMeasured++
		}
	}
	rank := func(name string) int {
		for i, su := range suites {
			if su.name == name {
				return i
			}
		}
		return len(suites)
	}
	slices.SortStableFunc(names, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	var rows []row
	total := row{suite: "**total**"}
	for _, n := range names {
		r := *by[n]
		if i := rank(n); i < len(suites) {
			r.what = suites[i].what
		}
		rows = append(rows, r)
		total.n += r.n
		total.survived += r.survived
		total.clearly += r.clearly
		total.unverified += r.unverified
		total.lost += r.lost
		total.resent += r.resent
		total.resentMeasured += r.resentMeasured
	}
	return rows, total
}

// tests counts leaf and top-level results: top-level tests only.
func (s *summary) tests() (pass, fail, skip int, failed []testKey) {
	for _, k := range s.order {
		if strings.Contains(k.test, "/") {
			if s.results[k] == "fail" {
				failed = append(failed, k)
			}
			continue
		}
		switch s.results[k] {
		case "pass":
			pass++
		case "fail":
			fail++
			failed = append(failed, k)
		case "skip":
			skip++
		}
	}
	return
}

func (s *summary) crashes() int {
	n := 0
	for _, k := range s.fuzzOrder {
		if s.fuzz[k].failed {
			n++
		}
	}
	return n
}

func (s *summary) ok() bool {
	_, fail, _, _ := s.tests()
	_, total := s.rows()
	return fail == 0 && len(s.buildFail) == 0 && s.crashes() == 0 && total.lost == 0 &&
		total.unverified == 0 && len(s.malformed) == 0 && len(s.faults) > 0 &&
		(s.leaks == nil || s.leaks.Leaks == 0 && s.leaks.Short == 0)
}

func (s *summary) render() string {
	var b strings.Builder
	rows, total := s.rows()
	b.WriteString("## Fault injection\n\n")
	b.WriteString("| suite | faults injected | survived | failed clearly | bytes lost | bytes re-sent | what |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|---|\n")
	for _, r := range append(rows, total) {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %s | %s |\n", r.suite, r.n, r.survived, r.clearly, r.lost, resentCell(r), r.what)
	}
	if total.unverified > 0 {
		fmt.Fprintf(&b, "\n%d faults are unverified: their tests failed (below).\n", total.unverified)
	}
	if len(s.fuzzOrder) > 0 {
		b.WriteString("\n## Fuzzing\n\n")
		b.WriteString("| package | target | time | executions | crashes |\n")
		b.WriteString("|---|---|--:|--:|--:|\n")
		var execs int64
		for _, k := range s.fuzzOrder {
			fr := s.fuzz[k]
			crash := 0
			if fr.failed {
				crash = 1
			}
			execs += fr.execs
			fmt.Fprintf(&b, "| %s | %s | %s | %d | %d |\n", shortPkg(k.pkg), k.test, fr.elapsed, fr.execs, crash)
		}
		fmt.Fprintf(&b, "| **total** | %d targets | | %d | %d |\n", len(s.fuzzOrder), execs, s.crashes())
		for _, k := range s.fuzzOrder {
			if fr := s.fuzz[k]; fr.raced && fr.input == "" {
				fmt.Fprintf(&b, "\n%s ended with \"context deadline exceeded\" and wrote no failing input: Go's fuzz coordinator race at the -fuzztime deadline (golang/go#75804, fixed in Go 1.27), not a crash\n", k.test)
			}
			if fr := s.fuzz[k]; fr.input != "" {
				fmt.Fprintf(&b, "\n%s crashed; failing input: %s\n", k.test, fr.input)
			}
		}
	}
	if l := s.leaks; l != nil {
		b.WriteString("\n## Credentials in output and logs\n\n")
		b.WriteString("| secrets checked | forms searched | files | lines | leaks |\n")
		b.WriteString("|--:|--:|--:|--:|--:|\n")
		fmt.Fprintf(&b, "| %d | %d | %d | %d | %d |\n", l.Secrets, l.Forms, l.Files, l.Lines, l.Leaks)
		if l.Short > 0 {
			fmt.Fprintf(&b, "\n%d recorded credentials are too short to search for (draw them with testenv.NewSecret).\n", l.Short)
		}
	}
	if len(s.gaps) > 0 {
		b.WriteString("\n## Known gaps (logged, not failed)\n\n")
		for _, g := range s.gaps {
			fmt.Fprintf(&b, "- %s\n", g)
		}
	}
	pass, fail, skip, failed := s.tests()
	if len(failed) > 0 || len(s.buildFail) > 0 || len(s.malformed) > 0 {
		b.WriteString("\n## Failures\n")
		for _, p := range s.buildFail {
			fmt.Fprintf(&b, "\n%s: build or setup failed\n", shortPkg(p))
			for _, l := range s.outputs[testKey{p, ""}] {
				fmt.Fprintf(&b, "    %s\n", l)
			}
		}
		if len(s.buildFail) > 0 {
			for _, l := range s.buildOut {
				fmt.Fprintf(&b, "    %s\n", l)
			}
		}
		for _, k := range failed {
			fmt.Fprintf(&b, "\n--- FAIL: %s %s\n", shortPkg(k.pkg), k.test)
			for _, l := range s.outputs[k] {
				fmt.Fprintf(&b, "    %s\n", l)
			}
		}
		for _, m := range s.malformed {
			fmt.Fprintf(&b, "\nmalformed FAULT line: %s\n", m)
		}
	}
	if len(s.faults) == 0 {
		b.WriteString("\nno FAULT line found: did the fault suites run?\n")
	}
	b.WriteString("\n")
	if total.lost != 0 {
		fmt.Fprintf(&b, "BYTES LOST: %d\n", total.lost)
	}
	if s.leaks != nil && s.leaks.Leaks != 0 {
		fmt.Fprintf(&b, "CREDENTIALS LEAKED: %d (see leakcheck's report above)\n", s.leaks.Leaks)
	}
	fmt.Fprintf(&b, "fault-suite: %d passed, %d failed, %d skipped\n", pass, fail+len(s.buildFail), skip)
	return b.String()
}

func resentCell(r row) string {
	switch {
	case r.resentMeasured == 0:
		return "n/m"
	case r.resentMeasured < r.survived+r.clearly:
		return fmt.Sprintf("%s (%d of %d measured)", human.Bytes(r.resent), r.resentMeasured, r.survived+r.clearly)
	}
	return human.Bytes(r.resent)
}

func shortPkg(p string) string {
	return strings.TrimPrefix(p, "github.com/modelcar/modelcar/")
}
