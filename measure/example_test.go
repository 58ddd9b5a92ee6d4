package measure_test

import (
	"fmt"
	"os"

	"github.com/modelcar/modelcar/measure"
)

func ExampleAnalyze() {
	b, err := measure.ReadBundle("../testdata/measure/scaleup-cluster-autoscaler")
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := measure.Analyze(b)
	if err != nil {
		fmt.Println(err)
		return
	}
	c := r.ColdStarts[0]
	fmt.Printf("%s: %.1f s\n", c.Pod, c.TotalSeconds)
	fmt.Printf("provision %.2f, pull %.2f, load %.2f, warmup %.2f, unattributed %.2f\n",
		c.Phases.Provision, c.Phases.Pull, c.Phases.Load, c.Phases.Warmup, c.UnattributedSeconds)
	for _, s := range c.Details.Provision.Steps {
		fmt.Printf("  %s %.2f s\n", s.Name, s.Seconds)
	}
	fmt.Println("dominant:", c.Dominant)
	// Output:
	// llm/vllm-llama-7c9d8b6f5-x2k4q: 345.0 s
	// provision 165.25, pull 72.50, load 37.60, warmup 65.40, unattributed 4.25
	//   waiting for scale-up 90.00 s
	//   node boot 40.00 s
	//   GPU allocatable 30.00 s
	//   scheduling 5.25 s
	// dominant: provision
}

func ExampleCompare() {
	read := func(dir string) *measure.Report {
		b, err := measure.ReadBundle(dir)
		if err != nil {
			panic(err)
		}
		r, err := measure.Analyze(b)
		if err != nil {
			panic(err)
		}
		return r
	}
	base := read("../testdata/measure/cached-image")
	next := read("../testdata/measure/slow-pull")
	diff, regressed := measure.Compare(base, next, 0.10)
	measure.RenderDiff(os.Stdout, diff, measure.Text)
	fmt.Println("exit status 1:", regressed)
	// Output:
	//                base (s)   new (s)  change
	// total              52.0     610.0  +558.0 s (+1073.1%)    REGRESSED
	// provision           0.8       0.5  -0.3 s (-39.3%)        ok
	// pull                0.0     450.6  +450.6 s (new)         REGRESSED
	// load               28.9     104.4  +75.5 s (+261.2%)      REGRESSED
	// warmup             20.1      48.6  +28.5 s (+141.8%)      REGRESSED
	// unattributed        2.2       5.9  +3.7 s (+173.4%)       not gated
	// regressed: total, pull, load, warmup
	// rule: a phase or the total regresses when it grows by more than 10% and by at least 1 s; values are the p50 over each report's cold starts (base 1, new 1)
	// exit status 1: true
}
