package measure

import (
	"cmp"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// craftBundle copies a fixture bundle with one string of one file replaced.
func craftBundle(t *testing.T, fixture, file, old, new string) string {
	t.Helper()
	dir := t.TempDir()
	err := filepath.WalkDir(filepath.Join(fixtures, fixture), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join(fixtures, fixture), path)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if rel == filepath.FromSlash(file) {
			if !strings.Contains(string(data), old) {
				t.Fatalf("%s has no %q", file, old)
			}
			data = []byte(strings.ReplaceAll(string(data), old, new))
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755)
		return os.WriteFile(filepath.Join(dir, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestInvalidTimestamps: timestamps no cold start can have (a log line in
// year 9999, Ready before creation, a pull of negative length or one
// starting before the pod, a container started in 9999) are reported as
// invalid data naming the file and field, and ignored: the phase they
// bounded comes from another source or is left unattributed, never a
// nonsense step or a silent 0 s cold start.
func TestInvalidTimestamps(t *testing.T) {
	const logFile = "logs/llm_llama70b-vllm-0_vllm.log"
	for _, tc := range []struct {
		name, file, old, new string
		invalid              string // in ColdStart.Invalid
		missing              string // in ColdStart.Missing, or ""
		check                func(t *testing.T, c *ColdStart)
		fixture              string // default slow-pull
	}{
		{"log in year 9999", logFile, "2025-03-14T13:09:2", "9999-03-14T13:09:2",
			logFile + ":8: timestamp 9999-03-14T13:09:20.900112734Z is in the future: it and 3 more such lines are ignored",
			logFile + " has no weight-loading line", func(t *testing.T, c *ColdStart) {
				if c.Details.Load.Known || c.Details.Warmup.Known || c.Phases.Load != 0 || c.Phases.Warmup != 0 {
					t.Errorf("load %v, warmup %v: want both unattributed", c.Phases.Load, c.Phases.Warmup)
				}
			}, ""},
		{"Ready before creation", "pods.json", `"lastTransitionTime": "2025-03-14T13:10:10Z", "status": "True", "type": "Ready"`,
			`"lastTransitionTime": "2025-03-14T12:59:00Z", "status": "True", "type": "Ready"`,
			"pods.json: status.conditions[Ready].lastTransitionTime: 2025-03-14T12:59:00Z is before the pod's creation (2025-03-14T13:00:00Z): the condition is ignored",
			"the Ready condition is invalid", func(t *testing.T, c *ColdStart) {
				if c.TotalSeconds < 600 || !c.Ready.IsZero() {
					t.Errorf("total %v s, ready %v: want the last thing seen, not 0 s", c.TotalSeconds, c.Ready)
				}
			}, ""},
		{"negative pull", "events.json", `in 1m40.889s (1m40.889s including waiting)`, `in -1m40.889s (-1m40.889s including waiting)`,
			"events.json: Pulled event (uid e4000004-0000-4000-8000-000000000006) message: the pull took -1m40.889s (-1m40.889s including waiting), a negative time: the pull is ignored",
			"", func(t *testing.T, c *ColdStart) {
				for _, im := range c.Details.Images {
					if im.Seconds < 0 || im.PullSeconds < 0 || strings.Contains(im.Image, "vllm-openai") && im.Source != "Pulling event → Pulled event" {
						t.Errorf("image %+v", im)
					}
				}
			}, ""},
		{"pull longer than the pod", "events.json", `in 1m40.889s (1m40.889s including waiting)`, `in 1m40.889s (9999h including waiting)`,
			"events.json: Pulled event (uid e4000004-0000-4000-8000-000000000006) message: the pull's start (9999h0m0s before the event) 2024-01-22T22:07:36Z is before the pod's creation (2025-03-14T13:00:00Z): the pull is ignored",
			"", nil, ""},
		{"container started in 9999", "pods.json", `"running": {"startedAt": "2025-03-14T13:07:37Z"}`, `"running": {"startedAt": "9999-03-14T13:07:37Z"}`,
			"pods.json: status.containerStatuses[vllm].state.startedAt: 9999-03-14T13:07:37Z is in the future: the container's start is ignored",
			"", func(t *testing.T, c *ColdStart) {
				if c.Details.Load.From != "Started event (vllm)" {
					t.Errorf("load from %q, want the Started event", c.Details.Load.From)
				}
			}, ""},
		{"node created in 9999", "nodes.json", `"creationTimestamp": "2025-03-14T10:01:30Z"`, `"creationTimestamp": "9999-03-14T10:01:30Z"`,
			"nodes.json: node gpu-a100-pool-9f2kx metadata.creationTimestamp: 9999-03-14T10:01:30Z is in the future: the node's creation is ignored",
			"node gpu-a100-pool-9f2kx has no valid creationTimestamp: cannot tell whether provision waited for a new node", func(t *testing.T, c *ColdStart) {
				if steps := c.Details.Provision.Steps; len(steps) != 1 || steps[0].Name != "scheduling" || strings.Contains(strings.Join(c.Details.Notes, "\n"), "existing node") {
					t.Errorf("provision steps %+v, notes %q: want it unsplit, with no claim about the node", steps, c.Details.Notes)
				}
			}, "scaleup-cluster-autoscaler"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ReadBundle(craftBundle(t, cmp.Or(tc.fixture, "slow-pull"), tc.file, tc.old, tc.new))
			if err != nil {
				t.Fatal(err)
			}
			r, err := Analyze(b)
			if err != nil {
				t.Fatal(err)
			}
			c := &r.ColdStarts[0]
			if len(c.Invalid) != 1 || c.Invalid[0] != tc.invalid {
				t.Errorf("invalid = %q\nwant %q", c.Invalid, tc.invalid)
			}
			if tc.missing != "" && !strings.Contains(strings.Join(c.Missing, "\n"), tc.missing) {
				t.Errorf("missing = %q, want %q", c.Missing, tc.missing)
			}
			sum := c.Phases.Provision + c.Phases.Pull + c.Phases.Load + c.Phases.Warmup + c.UnattributedSeconds
			if c.TotalSeconds <= 0 || c.TotalSeconds > 3600 || round3(sum) != c.TotalSeconds {
				t.Errorf("total %v s, phases + unattributed %v s", c.TotalSeconds, sum)
			}
			for _, pd := range []PhaseDetail{c.Details.Provision, c.Details.Pull, c.Details.Load, c.Details.Warmup} {
				for _, st := range pd.Steps {
					if st.Seconds < 0 || st.Seconds > c.TotalSeconds || st.At < 0 || st.At > c.TotalSeconds {
						t.Errorf("step %+v outside the cold start (%v s)", st, c.TotalSeconds)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, c)
			}
			var text strings.Builder
			if err := Render(&text, r, Text); err != nil || !strings.Contains(text.String(), "  invalid data: "+tc.invalid) {
				t.Errorf("text report: %v\n%s", err, text.String())
			}
		})
	}
}
