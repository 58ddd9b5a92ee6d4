package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stream renders test2json events, one per line.
func stream(t *testing.T, events ...event) string {
	t.Helper()
	var b strings.Builder
	for _, e := range events {
		j, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

const pkg = "github.com/modelcar/modelcar/push"

func out(test, text string) event {
	return event{Action: "output", Package: pkg, Test: test, Output: text + "\n"}
}

func TestSummaryCountsFaults(t *testing.T) {
	in := stream(t,
		event{Action: "run", Package: pkg, Test: "TestToxi"},
		event{Action: "run", Package: pkg, Test: "TestToxi/reset/push"},
		out("TestToxi/reset/push", "    toxiproxy_test.go:354: FAULT name=toxi/reset/push outcome=survived bytes_lost=0 resent_bytes=3145728"),
		event{Action: "pass", Package: pkg, Test: "TestToxi/reset/push"},
		event{Action: "run", Package: pkg, Test: "TestToxi/reset/pull"},
		out("TestToxi/reset/pull", "    toxiproxy_test.go:373: FAULT name=toxi/reset/pull outcome=failed-clearly bytes_lost=0 resent_bytes=1048576"),
		event{Action: "pass", Package: pkg, Test: "TestToxi/reset/pull"},
		event{Action: "pass", Package: pkg, Test: "TestToxi"},
		event{Action: "run", Package: pkg, Test: "TestCrash"},
		out("TestCrash", "    crash_test.go:99: FAULT name=crash/pack/00 outcome=survived bytes_lost=0"),
		out("TestCrash", "    crash_test.go:99: KNOWN GAP: something to fix"),
		event{Action: "pass", Package: pkg, Test: "TestCrash"},
		event{Action: "run", Package: pkg, Test: "FuzzX"},
		out("FuzzX", "fuzz: elapsed: 0s, gathering baseline coverage: 0/146 completed"),
		out("FuzzX", "fuzz: elapsed: 3s, execs: 20411 (6803/sec), new interesting: 13 (total: 159)"),
		out("FuzzX", "fuzz: elapsed: 10s, execs: 70500 (44/sec), new interesting: 13 (total: 159)"),
		event{Action: "pass", Package: pkg, Test: "FuzzX"},
		// A fuzz target run as a test (seed corpus only) is no fuzz run.
		event{Action: "run", Package: pkg, Test: "FuzzSeeds"},
		event{Action: "pass", Package: pkg, Test: "FuzzSeeds"},
		event{Action: "pass", Package: pkg},
	)
	s := newSummary()
	if err := s.read(strings.NewReader(in), "in"); err != nil {
		t.Fatal(err)
	}
	rows, total := s.rows()
	if len(rows) != 2 || rows[0].suite != "toxi" || rows[1].suite != "crash" {
		t.Fatalf("rows %+v", rows)
	}
	if r := rows[0]; r.n != 2 || r.survived != 1 || r.clearly != 1 || r.resent != 4<<20 || r.resentMeasured != 2 {
		t.Errorf("toxi row %+v", r)
	}
	if total.n != 3 || total.lost != 0 || total.unverified != 0 {
		t.Errorf("total %+v", total)
	}
	if !s.ok() {
		t.Errorf("not ok:\n%s", s.render())
	}
	text := s.render()
	for _, want := range []string{
		"| toxi | 2 | 1 | 1 | 0 | 4.0 MiB |",
		"| crash | 1 | 1 | 0 | 0 | n/m |",
		"| **total** | 3 | 2 | 1 | 0 | 4.0 MiB (2 of 3 measured) |",
		"| push | FuzzX | 10s | 70500 | 0 |",
		"- something to fix (TestCrash)",
		"fault-suite: 4 passed, 0 failed, 0 skipped\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "FuzzSeeds") {
		t.Errorf("a seed-corpus run is listed as fuzzing:\n%s", text)
	}
}

func TestSummaryFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []event
		want string
	}{
		{"bytes lost", []event{
			{Action: "run", Package: pkg, Test: "TestA"},
			out("TestA", "FAULT name=toxi/a outcome=survived bytes_lost=12 resent_bytes=0"),
			{Action: "pass", Package: pkg, Test: "TestA"},
		}, "BYTES LOST: 12"},
		{"failed test: its faults unverified", []event{
			{Action: "run", Package: pkg, Test: "TestA"},
			out("TestA", "FAULT name=toxi/a outcome=survived bytes_lost=0"),
			out("TestA", "    x_test.go:9: boom"),
			{Action: "fail", Package: pkg, Test: "TestA"},
		}, "1 faults are unverified"},
		{"fuzz crash", []event{
			{Action: "run", Package: pkg, Test: "TestA"},
			out("TestA", "FAULT name=toxi/a outcome=survived bytes_lost=0"),
			{Action: "pass", Package: pkg, Test: "TestA"},
			{Action: "run", Package: pkg, Test: "FuzzX"},
			out("FuzzX", "fuzz: elapsed: 2s, execs: 100 (50/sec), new interesting: 0 (total: 1)"),
			out("FuzzX", "    Failing input written to testdata/fuzz/FuzzX/0123abcd"),
			{Action: "fail", Package: pkg, Test: "FuzzX"},
		}, "failing input: testdata/fuzz/FuzzX/0123abcd"},
		{"malformed", []event{
			{Action: "run", Package: pkg, Test: "TestA"},
			out("TestA", "FAULT name=toxi/a outcome=maybe bytes_lost=0"),
			{Action: "pass", Package: pkg, Test: "TestA"},
		}, "malformed FAULT line"},
		{"no faults", []event{
			{Action: "run", Package: pkg, Test: "TestA"},
			{Action: "pass", Package: pkg, Test: "TestA"},
		}, "no FAULT line found"},
		{"TestMain panic", []event{
			{Action: "start", Package: "x"},
			{Action: "output", Package: "x", Output: "panic: # github.com/modelcar/modelcar/pack\n"},
			{Action: "output", Package: "x", Output: "FAIL\tx\t0.9s\n"},
			{Action: "fail", Package: "x"},
		}, "panic: # github.com/modelcar/modelcar/pack"},
		{"build failure", []event{
			{Action: "build-output", ImportPath: "x [x.test]", Output: "./x_test.go:3:28: undefined: y\n"},
			{Action: "build-fail", ImportPath: "x [x.test]"},
			{Action: "fail", Package: "x", FailedBuild: "x [x.test]"},
		}, "undefined: y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSummary()
			if err := s.read(strings.NewReader(stream(t, tc.in...)), "in"); err != nil {
				t.Fatal(err)
			}
			if s.ok() {
				t.Errorf("ok, want a failure:\n%s", s.render())
			}
			if text := s.render(); !strings.Contains(text, tc.want) {
				t.Errorf("summary lacks %q:\n%s", tc.want, text)
			}
		})
	}
}

// TestSummaryFuzzDeadlineRace: a fuzz target that fails only with a bare
// "context deadline exceeded" at its -fuzztime deadline and writes no
// failing input (Go's coordinator race, golang/go#75804) is not a crash;
// the same line with a failing input written is one.
func TestSummaryFuzzDeadlineRace(t *testing.T) {
	fuzz := func(input bool) []event {
		ev := []event{
			{Action: "run", Package: pkg, Test: "TestA"},
			out("TestA", "FAULT name=toxi/a outcome=survived bytes_lost=0"),
			{Action: "pass", Package: pkg, Test: "TestA"},
			{Action: "run", Package: pkg, Test: "FuzzX"},
			out("FuzzX", "fuzz: elapsed: 9s, execs: 7048 (0/sec), new interesting: 4 (total: 139)"),
			out("FuzzX", "--- FAIL: FuzzX (10.19s)"),
			out("FuzzX", "    context deadline exceeded"),
		}
		if input {
			ev = append(ev, out("FuzzX", "    Failing input written to testdata/fuzz/FuzzX/0123abcd"))
		}
		return append(ev, event{Action: "fail", Package: pkg, Test: "FuzzX"})
	}
	s := newSummary()
	if err := s.read(strings.NewReader(stream(t, fuzz(false)...)), "in"); err != nil {
		t.Fatal(err)
	}
	if text := s.render(); !s.ok() || !strings.Contains(text, "golang/go#75804") || !strings.Contains(text, "| FuzzX | 9s | 7048 | 0 |") {
		t.Errorf("the deadline race counted as a failure:\n%s", text)
	}
	s = newSummary()
	if err := s.read(strings.NewReader(stream(t, fuzz(true)...)), "in"); err != nil {
		t.Fatal(err)
	}
	if s.ok() || s.crashes() != 1 {
		t.Errorf("a written failing input not counted as a crash:\n%s", s.render())
	}
}

// TestSummaryReportsLeakCheck: leakcheck's result shows as the secrets
// checked and leaks found; a leak fails the run.
func TestSummaryReportsLeakCheck(t *testing.T) {
	passing := stream(t,
		event{Action: "run", Package: pkg, Test: "TestA"},
		out("TestA", "FAULT name=toxi/a outcome=survived bytes_lost=0"),
		event{Action: "pass", Package: pkg, Test: "TestA"},
	)
	for _, tc := range []struct {
		leaks, short int
		ok           bool
		want         string
	}{
		{0, 0, true, "| 57 | 174 | 3 | 9000 | 0 |"},
		{2, 0, false, "CREDENTIALS LEAKED: 2"},
		{0, 1, false, "1 recorded credentials are too short to search for"},
	} {
		res := filepath.Join(t.TempDir(), "leakcheck.out")
		b, _ := json.Marshal(map[string]int{"secrets": 57, "forms": 174, "files": 3, "lines": 9000, "leaks": tc.leaks, "short": tc.short})
		if err := os.WriteFile(res, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s := newSummary()
		if err := s.read(strings.NewReader(passing), "in"); err != nil {
			t.Fatal(err)
		}
		if err := s.readLeaks(res); err != nil {
			t.Fatal(err)
		}
		text := s.render()
		if s.ok() != tc.ok || !strings.Contains(text, "## Credentials in output and logs") || !strings.Contains(text, tc.want) {
			t.Errorf("%d leaks: ok %v, want %v; summary lacks %q?\n%s", tc.leaks, s.ok(), tc.ok, tc.want, text)
		}
	}
	if err := newSummary().readLeaks(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing leak check result was accepted")
	}
}

// TestPrintOutput: -print shows what `go test -v` would, from the stream.
func TestPrintOutput(t *testing.T) {
	in := stream(t,
		event{Action: "start", Package: pkg},
		event{Action: "run", Package: pkg, Test: "TestA"},
		out("TestA", "=== RUN   TestA"),
		event{Action: "output", Package: pkg, Test: "TestA", Output: "    a_test.go:3: a long line, "},
		event{Action: "output", Package: pkg, Test: "TestA", Output: "split by test2json\n"},
		event{Action: "pass", Package: pkg, Test: "TestA"},
	) + "go: downloading example.com/x v1.0.0\n"
	var b strings.Builder
	if err := printOutput(strings.NewReader(in), &b); err != nil {
		t.Fatal(err)
	}
	want := "=== RUN   TestA\n    a_test.go:3: a long line, split by test2json\ngo: downloading example.com/x v1.0.0\n"
	if b.String() != want {
		t.Errorf("printed %q, want %q", b.String(), want)
	}
}
