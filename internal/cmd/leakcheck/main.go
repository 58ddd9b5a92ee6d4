// Command leakcheck fails when a credential of the test environment shows
// in the output of a test run or in the logs the environment kept: it is
// how `make test` and `make test-faults` prove that credentials never
// appear in output, logs or errors.
//
// internal/testenv records every credential it makes or is handed (see
// testenv.RecordSecret) to the file $MODELCAR_SECRETS_FILE names, one
// "FORM\tVALUE" line per form: the secret, its base64, the base64 of
// "user:secret" that HTTP basic auth and docker's config.json carry, issued
// tokens. leakcheck reads that file (-secrets) and searches every PATH
// (files, and directories walked) for any recorded value, and for
// testenv.SecretMarker, which starts every secret testenv draws, plain or
// inside base64 (at any of the three alignments, either alphabet): that
// also catches a secret that was never recorded or shows only in part.
// Lines of `go test -json` streams are searched as the test output they
// carry, reassembled where test2json split a long line.
//
// Each line that shows a secret is a leak, reported as FILE:LINE with the
// kind of secret and its form, never the value. The summary line gives the number of secrets
// checked and of leaks found; -o writes them as JSON for faultsummary.
// Every recorded value must be at least 8 bytes long, as testenv's are
// (41): a shorter one would match by chance, and is not searched for but
// fails the check. It exits 1 when anything leaked or a recorded value was
// too short, 2 on bad usage or unreadable input.
//
// It serves `make test` and `make test-faults`; it is not part of the
// shipped binary.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/modelcar/modelcar/internal/testenv"
)

func main() {
	secretsFile := flag.String("secrets", "", "the secrets file the tests recorded (`$MODELCAR_SECRETS_FILE`); required")
	out := flag.String("o", "", "also write the result (JSON: secrets, forms, files, lines, leaks) to this file")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: leakcheck -secrets FILE [-o RESULT] PATH...\n\nSearches test output and logs for recorded credentials (see the package doc).\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *secretsFile == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	c, err := loadSecrets(*secretsFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "leakcheck: %v\n", err)
		os.Exit(2)
	}
	skip, _ := filepath.Abs(*secretsFile)
	res, err := c.scanPaths(flag.Args(), skip, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "leakcheck: %v\n", err)
		os.Exit(2)
	}
	fmt.Println(res.summary())
	if res.Short > 0 {
		fmt.Printf("leakcheck: FAIL: %d recorded values are too short to search for: draw credentials with testenv.NewSecret\n", res.Short)
	}
	if *out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "leakcheck: %v\n", err)
			os.Exit(2)
		}
	}
	if res.Leaks > 0 || res.Short > 0 {
		os.Exit(1)
	}
}

// pattern is one byte string that must not appear.
type pattern struct {
	value string
	// what names it in reports, without its value: "secret 3 (basic-auth)".
	what string
}

// minPattern is the shortest value searched for: shorter ones would match
// by chance. testenv's secrets are 41 bytes.
const minPattern = 8

// checker holds the patterns, indexed by their first minPattern bytes.
type checker struct {
	byPrefix map[string][]pattern
	secrets  int // distinct plain secrets recorded
	forms    int // values searched for, marker forms included
	short    int // recorded values too short to search for
}

// loadSecrets reads a secrets file and adds the marker's forms.
func loadSecrets(path string) (*checker, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w (was %s set for the tests?)", err, testenv.SecretsFileEnv)
	}
	defer f.Close()
	c := &checker{byPrefix: map[string][]pattern{}}
	seen := map[string]bool{}
	// testenv writes the forms of a secret together, plain first: the
	// others take its number.
	cur := 0
	number := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		form, value, ok := strings.Cut(sc.Text(), "\t")
		if !ok || value == "" {
			return nil, fmt.Errorf("%s:%d: want FORM<TAB>VALUE", path, n)
		}
		if form == testenv.FormPlain {
			if _, ok := number[value]; !ok {
				c.secrets++
				number[value] = c.secrets
			}
			cur = number[value]
		}
		if seen[value] {
			continue
		}
		seen[value] = true
		if len(value) < minPattern {
			c.short++
			continue
		}
		c.add(pattern{value: value, what: fmt.Sprintf("recorded secret #%d, %s form", cur, form)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, v := range markerForms(testenv.SecretMarker) {
		what := "the secret marker, plain"
		if i > 0 {
			what = "the secret marker, in base64"
		}
		c.add(pattern{value: v, what: what})
	}
	return c, nil
}

func (c *checker) add(p pattern) {
	k := p.value[:minPattern]
	c.byPrefix[k] = append(c.byPrefix[k], p)
	c.forms++
}

// markerForms returns marker itself and the parts of its base64 encodings
// (standard and URL alphabets) that do not depend on the bytes around it,
// for each of the three offsets at which it may start in the encoded data.
func markerForms(marker string) []string {
	forms := []string{marker}
	for pad := range 3 {
		data := append(make([]byte, pad), marker...)
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			s := enc.EncodeToString(data)
			// Characters 6-bit groups wholly inside the marker's bits.
			from, to := (8*pad+5)/6, 8*(pad+len(marker))/6
			if to-from >= minPattern && !slices.Contains(forms, s[from:to]) {
				forms = append(forms, s[from:to])
			}
		}
	}
	return forms
}

// find returns the patterns in line.
func (c *checker) find(line []byte) []pattern {
	var found []pattern
	for i := 0; i+minPattern <= len(line); i++ {
		for _, p := range c.byPrefix[string(line[i:i+minPattern])] {
			if bytes.HasPrefix(line[i:], []byte(p.value)) {
				found = append(found, p)
			}
		}
	}
	return found
}

// result is what a scan found; the JSON faultsummary reads.
type result struct {
	Secrets int `json:"secrets"` // distinct secrets recorded
	Forms   int `json:"forms"`   // values searched for
	Short   int `json:"short"`   // recorded values too short to search for
	Files   int `json:"files"`
	Lines   int `json:"lines"`
	Leaks   int `json:"leaks"` // lines that show a secret
}

func (r *result) summary() string {
	s := fmt.Sprintf("leakcheck: %d secrets (%d forms, the marker's included) checked in %d files (%d lines): %d leaks",
		r.Secrets, r.Forms, r.Files, r.Lines, r.Leaks)
	if r.Short > 0 {
		s += fmt.Sprintf("; %d recorded values shorter than %d bytes, not searched for", r.Short, minPattern)
	}
	return s
}

// maxReports bounds the findings printed; all are counted.
const maxReports = 50

// scanPaths scans every file under paths but skip, reporting findings to w.
func (c *checker) scanPaths(paths []string, skip string, w io.Writer) (*result, error) {
	res := &result{Secrets: c.secrets, Forms: c.forms, Short: c.short}
	var files []string
	for _, root := range paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				if abs, _ := filepath.Abs(p); abs != skip {
					files = append(files, p)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Strings(files)
	for _, f := range files {
		if err := c.scanFile(f, res, w); err != nil {
			return nil, err
		}
	}
	return res, nil
}

func (c *checker) scanFile(path string, res *result, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	res.Files++
	// A leak is a line that shows a secret; what it shows is listed once
	// (the basic-auth form of a secret may hold its base64 form too).
	report := func(line int, found []pattern) {
		if len(found) == 0 {
			return
		}
		res.Leaks++
		var what []string
		for _, p := range found {
			if !slices.Contains(what, p.what) {
				what = append(what, p.what)
			}
		}
		if res.Leaks <= maxReports {
			fmt.Fprintf(w, "%s:%d: LEAK: %s\n", path, line, strings.Join(what, "; "))
		} else if res.Leaks == maxReports+1 {
			fmt.Fprintf(w, "leakcheck: more leaks, not listed\n")
		}
	}
	// Output of go test -json streams, per test, until a line is whole.
	type key struct{ pkg, test string }
	pending := map[key][]byte{}
	var order []key
	br := bufio.NewReaderSize(f, 1<<20)
	n := 0
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			n++
			res.Lines++
			line = bytes.TrimRight(line, "\r\n")
			var e struct{ Action, Package, Test, Output string }
			if len(line) > 0 && line[0] == '{' && json.Unmarshal(line, &e) == nil && e.Action == "output" {
				k := key{e.Package, e.Test}
				if _, ok := pending[k]; !ok {
					order = append(order, k)
				}
				buf := append(pending[k], e.Output...)
				for {
					i := bytes.IndexByte(buf, '\n')
					if i < 0 {
						break
					}
					report(n, c.find(buf[:i]))
					buf = buf[i+1:]
				}
				pending[k] = buf
			} else {
				report(n, c.find(line))
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	for _, k := range order {
		report(n, c.find(pending[k]))
	}
	return nil
}
