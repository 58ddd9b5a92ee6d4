package plan

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"

	"github.com/modelcar/modelcar/internal/fielderr"
	"github.com/modelcar/modelcar/measure"
)

// Version is the plan JSON's schema version, written as "version".
const Version = 1

// A Status says what to do with a lever.
type Status string

// The statuses, in the order a plan lists them.
const (
	// Apply: the prerequisites hold and the numbers show a saving.
	Apply Status = "apply"
	// Advice: it does not shorten the cold start but makes it right.
	Advice Status = "advice"
	// Needs: a prerequisite is missing or unknown (Lever.Needs says which).
	Needs Status = "needs"
	// NoGain: the numbers show no saving (Lever.Arithmetic says why).
	NoGain Status = "no-gain"
)

var statusOrder = []Status{Apply, Advice, Needs, NoGain}

// A Confidence grades a saving: high (the report measured the time the
// lever removes), medium (measured, but the lever removes part of it, or the
// benchmark's ratios scale it), low (a documented default).
type Confidence string

// The confidences, best first.
const (
	High   Confidence = "high"
	Medium Confidence = "medium"
	Low    Confidence = "low"
)

var confidenceOrder = []Confidence{High, Medium, Low}

// Where a saving's numbers come from.
const (
	Measured = "measured" // the report alone
	Benched  = "bench"    // the report scaled by --bench ratios
	Default  = "default"  // a documented default, not measured
	Unknown  = "unknown"  // no estimate: the data it needs is missing
)

// The lever names.
const (
	LeverWarmPool       = "warm-pool"
	LeverPrepull        = "prepull"
	LeverRepackTar      = "repack-tar"
	LeverLazyPull       = "lazy-pull"
	LeverImageVolume    = "image-volume"
	LeverStreamingLoad  = "streaming-load"
	LeverCompileCache   = "compile-cache"
	LeverReadinessProbe = "readiness-probe"
	LeverWarmupProbe    = "warmup-probe"
)

// A Plan ranks the levers for a report's cold starts.
type Plan struct {
	Version int    `json:"version"`
	From    string `json:"from"`
	Basis   Basis  `json:"basis"`
	Facts   Facts  `json:"facts"`
	// FactSources says where each known fact came from.
	FactSources Sources `json:"fact_sources,omitempty"`
	// Bench describes the benchmark used, or says none was.
	Bench string `json:"bench"`
	// Warnings say what the numbers may not be about: an --image whose
	// repository none of the cold starts used.
	Warnings []string `json:"warnings,omitempty"`
	Images   []Image  `json:"images,omitempty"`
	// Levers: apply (ranked by saving, then confidence), advice, needs
	// (ranked the same way), no-gain.
	Levers []Lever   `json:"levers"`
	Notes  []string  `json:"notes,omitempty"`
	Pack   PackFlags `json:"pack"`
}

// Basis is what the plan's phase values are.
type Basis struct {
	ColdStarts int `json:"cold_starts"`
	// Statistic is "p50" (two or more cold starts) or "single".
	Statistic           string         `json:"statistic"`
	TotalSeconds        float64        `json:"total_seconds"`
	Phases              measure.Phases `json:"phases"`
	UnattributedSeconds float64        `json:"unattributed_seconds"`
}

// An Image is one image the report's cold starts pulled.
type Image struct {
	Image string `json:"image"`
	// Role is "model" (Options.Image's repository, or, without it or when
	// no image of the report is of that repository, any image but the
	// serving container's), "server" (the serving container's) or "other".
	Role string `json:"role"`
	// Pulled counts the cold starts that pulled it (not cached); Digest
	// says whether the reference is pinned.
	Pulled int `json:"pulled"`
	// Seconds is the p50 over those pulls of the pod's wait for the image,
	// including the wait behind other pulls.
	Seconds float64 `json:"seconds"`
	Bytes   int64   `json:"bytes,omitempty"`
	Digest  bool    `json:"digest"`
}

// A Lever is one way to shorten the cold start.
type Lever struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	// Phase is the phase it shortens (or "unattributed").
	Phase  string `json:"phase"`
	Status Status `json:"status"`
	// SavingSeconds is an upper bound on the time to Ready saved.
	SavingSeconds float64 `json:"saving_seconds"`
	// FirstReadSavingSeconds (lazy-pull) is how much sooner the container
	// can read its first file.
	FirstReadSavingSeconds float64    `json:"first_read_saving_seconds,omitempty"`
	Estimate               string     `json:"estimate"`
	Confidence             Confidence `json:"confidence"`
	// Arithmetic shows the numbers behind the saving (or why there is none).
	Arithmetic string `json:"arithmetic"`
	// Conditions must hold for the saving.
	Conditions []string `json:"conditions,omitempty"`
	// Needs lists the missing prerequisites (status needs).
	Needs []string `json:"needs,omitempty"`
	// Apply says what to run or set.
	Apply []string `json:"apply,omitempty"`
}

// PackFlags are the `modelcar pack` flags the plan recommends, and why.
type PackFlags struct {
	Flags []string `json:"flags"`
	Why   string   `json:"why"`
}

// Options configures Compute.
type Options struct {
	// From names the report in the plan.
	From string
	// Facts and where each came from (Sources may be nil).
	Facts   Facts
	Sources Sources
	// Bench, when not nil, gives the format ratios; BenchFrom names it.
	Bench     *Bench
	BenchFrom string
	// Image is the modelcar: the report's pulls of its repository are the
	// model image's. Without it, every image but the serving container's
	// is; so too when the report has no image of its repository (a new
	// image, not deployed yet), and the plan warns that the model-image
	// numbers are another image's. When pinned by digest, the pre-pull
	// commands pull it in place of the report's model images.
	Image string
	// CurrentFormat is the model image's layer format in the report
	// (gzip-single, gzip, zstd, tar, estargz, zstd-chunked); "" guesses a
	// single gzip stream from the pull rate (DefaultSingleStreamMBps).
	CurrentFormat string
	// Notes are added to the plan's (e.g. what discovery could not learn).
	Notes []string
	// Namespace ("" for the kubeconfig context's), NodeSelector,
	// Tolerations and PoolReplicas (0 for 1) go into the warm commands the
	// plan prints, as EmitOptions put them into Emit's files, so that
	// running them creates the same objects.
	Namespace    string
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	PoolReplicas int32
}

// FieldError is an Options or EmitOptions field that Validate refuses: the
// field's Go name, its value and why. It is the type of warm.FieldError.
type FieldError = fielderr.Error

// Validate checks the options as Compute uses them: CurrentFormat one of
// Formats (or empty) and PoolReplicas not negative. It returns a
// *FieldError.
func (o Options) Validate() error {
	if o.CurrentFormat != "" && !slices.Contains(formats, o.CurrentFormat) {
		return fielderr.New("CurrentFormat", o.CurrentFormat, fmt.Errorf("want one of %s", strings.Join(formats, ", ")))
	}
	if o.PoolReplicas < 0 {
		return fielderr.New("PoolReplicas", o.PoolReplicas, errors.New("must not be negative"))
	}
	return nil
}

// Formats lists the values of Options.CurrentFormat.
func Formats() []string { return slices.Clone(formats) }

// ErrNoColdStarts is returned for a report without cold starts.
var ErrNoColdStarts = errors.New("the report has no cold starts")

// Compute ranks the levers for rep.
func Compute(rep *measure.Report, o Options) (*Plan, error) {
	if len(rep.ColdStarts) == 0 {
		return nil, ErrNoColdStarts
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	src := Sources{}
	for k, v := range o.Sources {
		src[k] = v
	}
	facts := o.Facts
	facts.imageVolumesFromVersion(src)
	c := &calc{rep: rep, o: o, facts: facts, matched: o.Image != "" && hasRepository(rep, o.Image)}
	c.p = &Plan{Version: Version, From: o.From, Facts: facts, FactSources: src, Notes: slices.Clone(o.Notes)}
	if len(src) == 0 {
		c.p.FactSources = nil
	}
	c.basis()
	c.images()
	c.imageWarning()
	c.p.Bench = "none: format savings use documented defaults, not measurements"
	if o.Bench != nil {
		c.p.Bench = fmt.Sprintf("%s (link %g Mbit/s, model %.1f GB)", cmp.Or(o.BenchFrom, "given"), o.Bench.LinkMbit, float64(o.Bench.ModelBytes)/1e9)
		if facts.LinkMbit > 0 && o.Bench.LinkMbit > 0 && (facts.LinkMbit > 2*o.Bench.LinkMbit || o.Bench.LinkMbit > 2*facts.LinkMbit) {
			c.p.Notes = append(c.p.Notes, fmt.Sprintf("the benchmark ran on a %g Mbit/s link and the GPU nodes have %g Mbit/s: its format ratios may not hold here", o.Bench.LinkMbit, facts.LinkMbit))
		}
	}
	mp := c.modelPull()
	repack, lazy := c.repackTar(mp), c.lazyPull(mp)
	for _, l := range []Lever{c.warmPool(), c.prepull(), repack, lazy, c.imageVolume(),
		c.streamingLoad(), c.compileCache(), c.readinessProbe(), c.warmupProbe()} {
		c.p.Levers = append(c.p.Levers, finish(l))
	}
	rank(c.p.Levers)
	c.p.Pack = c.packFlags()
	c.notes()
	return c.p, nil
}

// finish sets the status: needs when a prerequisite is missing, no-gain
// under measure.MinRegressionSeconds, else apply (advice stays).
func finish(l Lever) Lever {
	l.SavingSeconds = round3(max(0, l.SavingSeconds))
	l.FirstReadSavingSeconds = round3(max(0, l.FirstReadSavingSeconds))
	switch {
	case l.Status == Advice:
	case len(l.Needs) > 0:
		l.Status = Needs
	case l.SavingSeconds < measure.MinRegressionSeconds:
		l.Status = NoGain
	default:
		l.Status = Apply
	}
	if l.Confidence == "" || l.Estimate == Unknown {
		l.Confidence = Low
	}
	return l
}

// rank orders levers by status, then saving (descending), confidence and
// name.
func rank(ls []Lever) {
	slices.SortStableFunc(ls, func(a, b Lever) int {
		return cmp.Or(
			cmp.Compare(slices.Index(statusOrder, a.Status), slices.Index(statusOrder, b.Status)),
			cmp.Compare(b.SavingSeconds, a.SavingSeconds),
			cmp.Compare(slices.Index(confidenceOrder, a.Confidence), slices.Index(confidenceOrder, b.Confidence)),
			cmp.Compare(a.Name, b.Name))
	})
}

// Lever returns the named lever, or nil.
func (p *Plan) Lever(name string) *Lever {
	for i := range p.Levers {
		if p.Levers[i].Name == name {
			return &p.Levers[i]
		}
	}
	return nil
}

type calc struct {
	rep   *measure.Report
	o     Options
	facts Facts
	p     *Plan
	// matched: o.Image's repository is among the report's images.
	matched bool
}

func (c *calc) basis() {
	r, b := c.rep, &c.p.Basis
	b.ColdStarts = len(r.ColdStarts)
	if s := r.Summary; s != nil && len(r.ColdStarts) >= 2 {
		b.Statistic = "p50"
		b.TotalSeconds, b.UnattributedSeconds = s.Total.P50, s.Unattributed.P50
		b.Phases = measure.Phases{Provision: s.Phases[measure.Provision].P50, Pull: s.Phases[measure.Pull].P50,
			Load: s.Phases[measure.Load].P50, Warmup: s.Phases[measure.Warmup].P50}
		return
	}
	b.Statistic = "single"
	if len(r.ColdStarts) > 1 { // a report without its summary: the same p50s
		b.Statistic = "p50"
	}
	col := func(f func(cs *measure.ColdStart) float64) float64 {
		v, _ := c.p50(func(cs *measure.ColdStart) (float64, bool) { return f(cs), true })
		return v
	}
	b.TotalSeconds = col(func(cs *measure.ColdStart) float64 { return cs.TotalSeconds })
	b.UnattributedSeconds = col(func(cs *measure.ColdStart) float64 { return cs.UnattributedSeconds })
	b.Phases = measure.Phases{
		Provision: col(func(cs *measure.ColdStart) float64 { return cs.Phases.Provision }),
		Pull:      col(func(cs *measure.ColdStart) float64 { return cs.Phases.Pull }),
		Load:      col(func(cs *measure.ColdStart) float64 { return cs.Phases.Load }),
		Warmup:    col(func(cs *measure.ColdStart) float64 { return cs.Phases.Warmup }),
	}
}

// p50 is the median of f over the cold starts where it applies, and how
// many those are.
func (c *calc) p50(f func(cs *measure.ColdStart) (float64, bool)) (float64, int) {
	v, n := c.p50Each(1, func(cs *measure.ColdStart) ([]float64, bool) {
		x, ok := f(cs)
		return []float64{x}, ok
	})
	return v[0], n
}

// p50Each is p50 of k quantities at once: the median of each of f's k
// values over the cold starts where f applies.
func (c *calc) p50Each(k int, f func(cs *measure.ColdStart) ([]float64, bool)) ([]float64, int) {
	cols := make([][]float64, k)
	for i := range c.rep.ColdStarts {
		if v, ok := f(&c.rep.ColdStarts[i]); ok {
			for j := range k {
				cols[j] = append(cols[j], v[j])
			}
		}
	}
	out := make([]float64, k)
	for j := range k {
		out[j] = median(cols[j])
	}
	return out, len(cols[0])
}

// known counts the cold starts where phase was attributed.
func (c *calc) known(phase string) int {
	_, n := c.p50(func(cs *measure.ColdStart) (float64, bool) { return 0, detail(cs, phase).Known })
	return n
}

func detail(cs *measure.ColdStart, phase string) *measure.PhaseDetail {
	switch phase {
	case measure.Provision:
		return &cs.Details.Provision
	case measure.Pull:
		return &cs.Details.Pull
	case measure.Load:
		return &cs.Details.Load
	}
	return &cs.Details.Warmup
}

// step returns the seconds of the last step named name, and whether there
// is one.
func step(pd *measure.PhaseDetail, name string) (measure.Step, bool) {
	for i := len(pd.Steps) - 1; i >= 0; i-- {
		if pd.Steps[i].Name == name {
			return pd.Steps[i], true
		}
	}
	return measure.Step{}, false
}

// of says "X s of TOTAL s", the phase against the total.
func (c *calc) of(phase string, v float64) string {
	return fmt.Sprintf("%s %s s of %s s", phase, fsec(v), fsec(c.p.Basis.TotalSeconds))
}

// which says which statistic a per-start quantity is: "" for a single
// cold start, "p50 of N cold starts" otherwise.
func (c *calc) which(n int, what string) string {
	if len(c.rep.ColdStarts) == 1 {
		return ""
	}
	if n == len(c.rep.ColdStarts) {
		return fmt.Sprintf(" (p50 of %d cold starts)", n)
	}
	return fmt.Sprintf(" (p50 of the %d of %d cold starts that %s)", n, len(c.rep.ColdStarts), what)
}

func (c *calc) images() {
	type agg struct {
		Image
		secs []float64
	}
	var order []string
	byName := map[string]*agg{}
	for i := range c.rep.ColdStarts {
		cs := &c.rep.ColdStarts[i]
		for _, ip := range cs.Details.Images {
			a := byName[ip.Image]
			if a == nil {
				a = &agg{Image: Image{Image: ip.Image, Role: c.role(cs, ip), Digest: strings.Contains(ip.Image, "@sha256:")}}
				byName[ip.Image] = a
				order = append(order, ip.Image)
			}
			if !ip.Cached {
				a.Pulled++
				a.secs = append(a.secs, ip.Seconds)
				a.Bytes = max(a.Bytes, ip.Bytes)
			}
		}
	}
	for _, n := range order {
		a := byName[n]
		a.Seconds = median(a.secs)
		c.p.Images = append(c.p.Images, a.Image)
	}
}

func pullSeconds(ip measure.ImagePull) float64 {
	if ip.PullSeconds > 0 {
		return ip.PullSeconds
	}
	return ip.Seconds
}

// role classifies an image pull of cs: model, server or other.
func (c *calc) role(cs *measure.ColdStart, ip measure.ImagePull) string {
	switch {
	case c.matched && repository(ip.Image) == repository(c.o.Image):
		return "model"
	case ip.Container != "" && ip.Container == cs.Details.Container:
		return "server"
	case !c.matched:
		return "model"
	}
	return "other"
}

// hasRepository says whether any image of rep's cold starts, pulled or
// cached, is of image's repository.
func hasRepository(rep *measure.Report, image string) bool {
	for i := range rep.ColdStarts {
		for _, ip := range rep.ColdStarts[i].Details.Images {
			if repository(ip.Image) == repository(image) {
				return true
			}
		}
	}
	return false
}

// imageWarning warns when Options.Image's repository is none of the
// report's: the model-image numbers are then those of the images taken
// for the model image (any but the serving container's).
func (c *calc) imageWarning() {
	if c.o.Image == "" || c.matched {
		return
	}
	var all, model []string
	for _, im := range c.p.Images {
		all = append(all, im.Image)
		if im.Role == "model" && im.Pulled > 0 {
			model = append(model, im.Image)
		}
	}
	w := fmt.Sprintf("--image's repository %s is in none of these cold starts", repository(c.o.Image))
	if len(all) > 0 {
		w += " (they used " + strings.Join(all, ", ") + ")"
	}
	if len(model) == 0 {
		w += ": no other image but the serving container's was pulled, so the model image's pull was not measured"
	} else {
		w += fmt.Sprintf(": the model-image numbers (prepull, repack-tar, lazy-pull) are measured on %s, taken for the image --image replaces; "+
			"they hold for --image only if it is as large and packed the same way (measure its cold start once it is deployed)", strings.Join(model, ", "))
	}
	c.p.Warnings = append(c.p.Warnings, w)
}

// untagged is ref without its tag and digest, as written.
func untagged(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

// repository is an image reference without its tag and digest, with
// Docker Hub's defaults filled in.
func repository(ref string) string {
	if r, err := name.ParseReference(ref, name.WeakValidation); err == nil {
		return r.Context().Name()
	}
	return untagged(ref)
}

func (c *calc) roleOf(img string) string {
	for _, im := range c.p.Images {
		if im.Image == img {
			return im.Role
		}
	}
	return ""
}

func (c *calc) notes() {
	b := c.p.Basis
	if u := b.UnattributedSeconds; u >= measure.MinRegressionSeconds && b.TotalSeconds > 0 && u >= b.TotalSeconds/10 {
		n := fmt.Sprintf("%s s of %s s (%.0f%%) is unattributed: no lever is ranked for it", fsec(u), fsec(b.TotalSeconds), 100*u/b.TotalSeconds)
		for i := range c.rep.ColdStarts {
			if m := c.rep.ColdStarts[i].Missing; len(m) > 0 {
				n += "; collect what is missing: " + m[0]
				break
			}
		}
		c.p.Notes = append(c.p.Notes, n)
	}
	var pull []string
	for _, l := range c.p.Levers {
		if l.Status == Apply && l.Phase == measure.Pull {
			pull = append(pull, l.Name)
		}
	}
	if len(pull) > 1 {
		c.p.Notes = append(c.p.Notes, fmt.Sprintf("%s and %s shorten the same pull time: their savings overlap and do not add up (at most %s s in all)",
			strings.Join(pull[:len(pull)-1], ", "), pull[len(pull)-1], fsec(b.Phases.Pull)))
	}
}

// An interval is [start, end] in seconds.
type interval struct{ start, end float64 }

// overlap is the length of the intersection of the unions of a and b.
func overlap(a, b []interval) float64 {
	ua, ub := union(a), union(b)
	var s float64
	for _, x := range ua {
		for _, y := range ub {
			s += max(0, min(x.end, y.end)-max(x.start, y.start))
		}
	}
	return s
}

func union(iv []interval) []interval {
	s := slices.Clone(iv)
	slices.SortFunc(s, func(a, b interval) int { return cmp.Compare(a.start, b.start) })
	var out []interval
	for _, x := range s {
		if n := len(out); n > 0 && x.start <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, x.end)
			continue
		}
		out = append(out, x)
	}
	return out
}

// median interpolates between the middle values, as the report's p50 does.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	m := len(s) / 2
	if len(s)%2 == 1 {
		return round3(s[m])
	}
	return round3((s[m-1] + s[m]) / 2)
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func fsec(s float64) string { return fmt.Sprintf("%.1f", s) }
