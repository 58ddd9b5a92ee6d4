package measure

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
)

// TestSVGWaterfall: the SVG parses as XML, has one bar per timeline segment
// (so at least one per phase a pod spent time in), a legend swatch per
// phase, and an axis in seconds.
func TestSVGWaterfall(t *testing.T) {
	for name := range expected {
		r := analyzeFixture(t, name)
		var buf bytes.Buffer
		if err := Render(&buf, r, SVG); err != nil {
			t.Fatal(err)
		}
		dec := xml.NewDecoder(bytes.NewReader(buf.Bytes()))
		bars, swatches := map[string]int{}, map[string]int{}
		var root string
		var texts []string
		inText := false
		for {
			tok, err := dec.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: SVG is not well-formed XML: %v", name, err)
			}
			switch el := tok.(type) {
			case xml.StartElement:
				if root == "" {
					root = el.Name.Space + " " + el.Name.Local
				}
				inText = el.Name.Local == "text"
				if el.Name.Local != "rect" {
					continue
				}
				attr := map[string]string{}
				for _, a := range el.Attr {
					attr[a.Name.Local] = a.Value
				}
				switch attr["class"] {
				case "bar":
					bars[attr["data-phase"]]++
					if attr["fill"] != PhaseColors[attr["data-phase"]] {
						t.Errorf("%s: bar %v has the wrong colour", name, attr)
					}
				case "swatch":
					swatches[attr["data-phase"]]++
				}
			case xml.CharData:
				if inText {
					texts = append(texts, string(el))
				}
			case xml.EndElement:
				inText = false
			}
		}
		if root != "http://www.w3.org/2000/svg svg" {
			t.Errorf("%s: root element %q", name, root)
		}
		want := map[string]int{}
		for _, c := range r.ColdStarts {
			for _, s := range c.Timeline {
				want[s.Phase]++
			}
			for _, ph := range PhaseNames {
				if c.Phases.Get(ph) > 0 && !hasSegment(c.Timeline, ph) {
					t.Errorf("%s %s: %s has %.1f s but no segment", name, c.Pod, ph, c.Phases.Get(ph))
				}
			}
		}
		if fmt.Sprint(bars) != fmt.Sprint(want) {
			t.Errorf("%s: bars per phase %v, want %v", name, bars, want)
		}
		for _, ph := range rowNames {
			if swatches[ph] != 1 {
				t.Errorf("%s: %d legend swatches for %s", name, swatches[ph], ph)
			}
		}
		if !strings.Contains(strings.Join(texts, "|"), "|seconds|") || !strings.Contains(strings.Join(texts, "|"), "|0|") {
			t.Errorf("%s: no axis in seconds in %q", name, texts)
		}
	}
}

func hasSegment(segs []Segment, phase string) bool {
	for _, s := range segs {
		if s.Phase == phase {
			return true
		}
	}
	return false
}

var mdSeparator = regexp.MustCompile(`^\|(\s*:?-+:?\s*\|)+$`)

// checkMarkdownTables checks that every table has a header, a separator
// row and rows with as many cells, and returns the number of tables.
func checkMarkdownTables(t *testing.T, name, md string) int {
	t.Helper()
	cells := func(line string) int {
		line = strings.ReplaceAll(line, `\|`, "")
		return strings.Count(line, "|") - 1
	}
	tables := 0
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "|") {
			continue
		}
		tables++
		n := cells(lines[i])
		if i+1 >= len(lines) || !mdSeparator.MatchString(lines[i+1]) || cells(lines[i+1]) != n {
			t.Errorf("%s: table at line %d has no separator row for %d cells", name, i+1, n)
		}
		if i > 0 && lines[i-1] != "" {
			t.Errorf("%s: table at line %d does not follow a blank line", name, i+1)
		}
		for i++; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
			if cells(lines[i]) != n {
				t.Errorf("%s: line %d has %d cells, want %d: %s", name, i+1, cells(lines[i]), n, lines[i])
			}
		}
	}
	return tables
}

func TestMarkdownReport(t *testing.T) {
	for name := range expected {
		r := analyzeFixture(t, name)
		var buf bytes.Buffer
		if err := Render(&buf, r, Markdown); err != nil {
			t.Fatal(err)
		}
		md := buf.String()
		want := len(r.ColdStarts)
		if r.Summary != nil {
			want++
		}
		if n := checkMarkdownTables(t, name, md); n != want {
			t.Errorf("%s: %d tables, want %d", name, n, want)
		}
		for _, c := range r.ColdStarts {
			if !strings.Contains(md, "**Dominant phase: "+c.Dominant) || !strings.Contains(md, c.Lever) {
				t.Errorf("%s: no dominant phase and lever for %s", name, c.Pod)
			}
		}
	}
	r := analyzeFixture(t, "slow-pull")
	var buf bytes.Buffer
	Render(&buf, r, Markdown)
	for _, want := range []string{
		"| **pull** | 450.6 | 73.9% | registry.example.com/models/llama-3.1-70b-instruct:v1 349.7 s (141.7 GB); vllm/vllm-openai:v0.7.3 100.9 s (9.9 GB) |",
		"| total | 610.0 | 100% | pod created → Ready |",
		"modelcar warm prepull",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, buf.String())
		}
	}
}

// TestJSONSchema checks the documented field names and the version.
func TestJSONSchema(t *testing.T) {
	r := analyzeFixture(t, "multi-pod")
	var buf bytes.Buffer
	if err := Render(&buf, r, JSON); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["version"] != 1.0 {
		t.Errorf("version = %v", doc["version"])
	}
	cs := doc["cold_starts"].([]any)
	c := cs[1].(map[string]any)
	for _, k := range []string{"pod", "node", "created", "ready", "total_seconds", "phases", "unattributed_seconds", "dominant", "lever", "details", "timeline", "missing"} {
		if _, ok := c[k]; !ok {
			t.Errorf("cold start lacks %q", k)
		}
	}
	if c["pod"] != "llm/phi-vllm-6b8f9d7c5-bbbbb" || c["node"] != "gpu-node-2" || c["total_seconds"] != 85.0 {
		t.Errorf("cold start = %v %v %v", c["pod"], c["node"], c["total_seconds"])
	}
	ph := c["phases"].(map[string]any)
	if len(ph) != 4 || ph["pull"] != 37.8 {
		t.Errorf("phases = %v", ph)
	}
	s := doc["summary"].(map[string]any)
	if s["pods"] != 3.0 || s["phases"].(map[string]any)["pull"].(map[string]any)["p50"] != 37.8 {
		t.Errorf("summary = %v", s)
	}
	back, err := ReadReport(&buf)
	if err != nil || len(back.ColdStarts) != 3 || back.ColdStarts[1].Phases != r.ColdStarts[1].Phases {
		t.Errorf("ReadReport: %v", err)
	}
	if _, err := ReadReport(strings.NewReader(`{"version":2}`)); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("version 2: %v", err)
	}
}

func TestTextReport(t *testing.T) {
	r := analyzeFixture(t, "missing-logs")
	var buf bytes.Buffer
	if err := Render(&buf, r, Text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"llm/gemma-vllm-6d5c8f7b9-q8w2e on gke-gpu-l4-pool-2b7c9e1f-4xkq: 150.0 s from creation to Ready",
		"  pull              45.1  30.1%  registry.example.com/serving/vllm-gemma:2025.03 45.1 s (8.1 GB, 2.8 s of it waiting behind other pulls)",
		"  missing: no vLLM log (logs/llm_gemma-vllm-6d5c8f7b9-q8w2e_server.log): load and warmup unattributed",
		"bundle lacks: nodes.json, logs/",
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, buf.String())
		}
	}
	if _, err := ParseFormat("html"); err == nil {
		t.Error("ParseFormat(html) did not fail")
	}
}
