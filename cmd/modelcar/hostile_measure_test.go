package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostileMeasureNegativeSeconds: a report whose seconds are negative
// (a total, a phase, unattributed time) is refused by measure compare and
// by plan, naming the file and the field: compare exits 2 (a file that
// cannot be compared, not a regression), plan 1 (as for any report it
// cannot read). compare said "no regression" and plan printed "-8500.0 s".
// Each crafted report counts in the hostile suite of make test-faults.
func TestHostileMeasureNegativeSeconds(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(planFixtures, "slow-pull.json"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.json")
	if err := os.WriteFile(base, good, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, field, json string }{
		{"total", "cold_starts[0].total_seconds", `"total_seconds": -8500`},
		{"phase", "cold_starts[0].phases.pull", `"pull": -8500`},
		{"unattributed", "cold_starts[0].unattributed_seconds", `"unattributed_seconds": -1`},
	} {
		bad := negate(t, string(good), tc.name)
		path := filepath.Join(dir, tc.name+".json")
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		want := path + ": " + tc.field + " is negative"
		for _, op := range []struct {
			name string
			res  result
			code int
		}{
			{"compare", runInProcess(t, "", "measure", "compare", base, path), 2},
			{"plan", runPlanCmd(t, "--from", path), 1},
		} {
			if op.res.code != op.code || !strings.Contains(op.res.stderr, want) {
				t.Errorf("%s of %s: exit %d, stderr %q; want exit %d and %q", op.name, tc.name, op.res.code, op.res.stderr, op.code, want)
				continue
			}
			if strings.Contains(op.res.stdout, "-8500") {
				t.Errorf("%s of %s printed the negative seconds: %s", op.name, tc.name, op.res.stdout)
			}
			t.Logf("FAULT name=hostile/measure-negative-%s/%s outcome=failed-clearly bytes_lost=0", tc.name, op.name)
		}
	}
}

// negate makes one field of the first cold start of a rendered report
// negative: which is "total", "phase" (pull) or "unattributed".
func negate(t *testing.T, report, which string) string {
	t.Helper()
	keys := map[string]string{"total": `"total_seconds": `, "phase": `"pull": `, "unattributed": `"unattributed_seconds": `}
	key := keys[which]
	i := strings.Index(report, key)
	if i < 0 {
		t.Fatalf("no %s in the fixture", key)
	}
	j := i + len(key)
	k := j + strings.IndexAny(report[j:], ",\n}")
	return report[:j] + "-8500" + report[k:]
}
