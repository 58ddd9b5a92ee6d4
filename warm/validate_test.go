package warm_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/warm"
)

// TestCheckCron: schedules are checked field by field as the API server
// checks a CronJob's (robfig/cron/v3 ParseStandard), so a schedule it
// would refuse never reaches it.
func TestCheckCron(t *testing.T) {
	for _, ok := range []string{
		"0 8 * * 1-5", "0 20 * * *", "*/15 * * * *", "0 9-17/2 * * MON-FRI", "0 0 1 jan,JUL *",
		"59 23 31 12 6", "0 0 1-31 1-12 0-6", "5,10,15 * * * *", "? * * * ?", "0 0 * * sun",
		"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", "@every 1h30m",
	} {
		if err := warm.CheckCron(ok); err != nil {
			t.Errorf("CheckCron(%q): %v", ok, err)
		}
	}
	for _, tc := range []struct{ cron, want string }{
		{"61 8 * * *", "end of range (61) above maximum (59)"},
		{"0 24 * * *", "above maximum (23)"},
		{"0 0 0 * *", "below minimum (1)"},
		{"0 0 32 * *", "above maximum (31)"},
		{"0 0 * 0 *", "below minimum (1)"},
		{"0 0 * 13 *", "above maximum (12)"},
		{"0 0 * * 7", "end of range (7) above maximum (6)"},
		{"0 0 * * 1-8", "above maximum (6)"},
		{"*/0 * * * *", "positive number"},
		{"5-1 * * * *", "beyond end of range"},
		{"1-2-3 * * * *", "1-2-3"},
		{"1/2/3 * * * *", "1/2/3"},
		{"x * * * *", `parsing "x"`},
		{"0 8 * * mon-xyz", `parsing "xyz"`},
		{"-1 * * * *", "-1"},
		{"0 8 * *", "expected exactly 5 fields, found 4"},
		{"0 0 8 * * *", "expected exactly 5 fields, found 6"},
		{"@fortnightly", "unrecognized descriptor"},
		{"@every fortnight", "invalid duration"},
		{"TZ=Europe/Paris 0 8 * * *", "PoolOptions.TimeZone"},
		{"CRON_TZ=UTC 0 8 * * *", "TZ"},
	} {
		err := warm.CheckCron(tc.cron)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckCron(%q) = %v, want an error with %q", tc.cron, err, tc.want)
		}
	}
	if err := warm.CheckCron("CRON_TZ=UTC 0 8 * * *"); !errors.Is(err, warm.ErrScheduleTimeZone) {
		t.Errorf("CheckCron(CRON_TZ=...) = %v, want ErrScheduleTimeZone", err)
	}
	// ParseSchedule, which the CLI's --schedule uses, keeps its promise.
	_, err := warm.ParseSchedule("61 8 * * *=4")
	if err == nil || !strings.Contains(err.Error(), "five-field cron expression") || !strings.Contains(err.Error(), "minute") {
		t.Errorf("ParseSchedule(61 8 * * *=4): %v", err)
	}
	if s, err := warm.ParseSchedule("@every  2h=3"); err != nil || s.Cron != "@every 2h" || s.Replicas != 3 {
		t.Errorf("ParseSchedule(@every 2h=3) = %+v, %v", s, err)
	}
}

// TestCheckTimeZone: time zones are checked as the API server does, with
// the embedded database (so the same on every host).
func TestCheckTimeZone(t *testing.T) {
	for _, ok := range []string{"Europe/Paris", "America/Argentina/Buenos_Aires", "UTC", "Etc/GMT+5", "Asia/Kolkata"} {
		if err := warm.CheckTimeZone(ok); err != nil {
			t.Errorf("CheckTimeZone(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"Mars/Olympus", "Local", "local", "", "../etc/passwd", "Europe//Paris", "/Europe/Paris", "Europe/Paris ", "-Europe"} {
		if err := warm.CheckTimeZone(bad); err == nil {
			t.Errorf("CheckTimeZone(%q) accepted", bad)
		}
	}
}

// TestPoolRefusesBeforeApply: a pool the API server would refuse in part
// (a CronJob with a bad schedule or time zone, a bad name) is refused by
// Pool, and ApplyPool creates nothing at all.
func TestPoolRefusesBeforeApply(t *testing.T) {
	for name, mut := range map[string]func(*warm.PoolOptions){
		"minute 61":       func(o *warm.PoolOptions) { o.Schedules[0].Cron = "61 8 * * *" },
		"day-of-week 7":   func(o *warm.PoolOptions) { o.Schedules[1].Cron = "0 20 * * 7" },
		"Mars time zone":  func(o *warm.PoolOptions) { o.TimeZone = "Mars/Olympus" },
		"bad name":        func(o *warm.PoolOptions) { o.Name = "Bad_Name" },
		"long name":       func(o *warm.PoolOptions) { o.Name = strings.Repeat("p", 45) },
		"priority class":  func(o *warm.PoolOptions) { o.PriorityClass = "Bad_Class" },
		"tag pause image": func(o *warm.PoolOptions) { o.PauseImage = "registry.k8s.io/pause:3.10" },
	} {
		o := scheduledPool("team")
		mut(&o)
		if _, err := warm.Pool(o); err == nil {
			t.Errorf("%s: Pool accepted %+v", name, o)
		}
		var requests atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			http.Error(w, "no", http.StatusTeapot)
		}))
		kc, err := kube.New(&rest.Config{Host: srv.URL})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := warm.ApplyPool(context.Background(), kc, o, warm.ApplyOptions{}); err == nil {
			t.Errorf("%s: ApplyPool accepted it", name)
		}
		srv.Close()
		if n := requests.Load(); n != 0 {
			t.Errorf("%s: ApplyPool sent %d requests before refusing", name, n)
		}
	}
	// The longest pool name whose CronJob names fit is accepted.
	o := scheduledPool("team")
	o.Name = strings.Repeat("p", 44) // p...p-scale-1: 52 characters
	if _, err := warm.Pool(o); err != nil {
		t.Errorf("44-character pool name with 2 schedules: %v", err)
	}
	if err := warm.CheckPoolName(strings.Repeat("p", 45), 2); err == nil || !strings.Contains(err.Error(), "at most 44") {
		t.Errorf("CheckPoolName(45 characters, 2 schedules): %v", err)
	}
	if err := warm.CheckPoolName(strings.Repeat("p", 63), 0); err != nil {
		t.Errorf("CheckPoolName(63 characters, no schedule): %v", err)
	}
}

// TestPrepullName: the DaemonSet name, also a label value, is a DNS-1123
// subdomain of at most 63 characters.
func TestPrepullName(t *testing.T) {
	for _, ok := range []string{"llama", "llama-3.1-8b", strings.Repeat("a", 63)} {
		o := gpuPrepull("team")
		o.Name = ok
		if _, err := warm.Prepull(o); err != nil {
			t.Errorf("name %q: %v", ok, err)
		}
	}
	for _, bad := range []string{"Bad_Name", "-llama", "llama-", "llama_3", strings.Repeat("a", 64), "a..b"} {
		o := gpuPrepull("team")
		o.Name = bad
		if _, err := warm.Prepull(o); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("name %q: %v, want an error naming it", bad, err)
		}
	}
	// The default name is always valid, whatever the repository.
	for _, img := range []string{testImage, "r.test/" + strings.Repeat("Very_Long.Name-", 10) + "@" + testDigest, "r.test/___@" + testDigest} {
		if n := warm.PrepullName(img); warm.CheckPrepullName(n) != nil {
			t.Errorf("PrepullName(%q) = %q: %v", img, n, warm.CheckPrepullName(n))
		}
	}
	o := gpuPrepull("team")
	o.PriorityClassName = "Bad_Class"
	if _, err := warm.Prepull(o); err == nil || !strings.Contains(err.Error(), "Bad_Class") {
		t.Errorf("priority class Bad_Class: %v", err)
	}
}

// TestPauseImagePinned: the default pause image is pinned by digest, and
// a pause image without a digest is refused like the modelcar unless
// AllowTag.
func TestPauseImagePinned(t *testing.T) {
	if err := (warm.PrepullOptions{Image: warm.DefaultPauseImage}).Validate(); err != nil {
		t.Errorf("DefaultPauseImage %s: %v", warm.DefaultPauseImage, err)
	}
	if !regexp.MustCompile(`@sha256:[0-9a-f]{64}$`).MatchString(warm.DefaultPauseImage) {
		t.Errorf("DefaultPauseImage %s is not REPO@sha256:<64 hex>", warm.DefaultPauseImage)
	}
	const tag = "registry.k8s.io/pause:3.10"
	pp := gpuPrepull("team")
	pp.PauseImage = tag
	if _, err := warm.Prepull(pp); !errors.Is(err, warm.ErrNoDigest) || !strings.Contains(err.Error(), "PauseImage") || !strings.Contains(err.Error(), tag) {
		t.Errorf("prepull with pause image %s: %v", tag, err)
	}
	pp.AllowTag = true
	if ds, err := warm.Prepull(pp); err != nil || ds.Spec.Template.Spec.Containers[0].Image != tag {
		t.Errorf("prepull with pause image %s and AllowTag: %v", tag, err)
	}
	pool := warm.PoolOptions{Replicas: 1, GPUsPerPod: 1, PauseImage: tag}
	if _, err := warm.Pool(pool); !errors.Is(err, warm.ErrNoDigest) || !strings.Contains(err.Error(), "PauseImage") {
		t.Errorf("pool with pause image %s: %v", tag, err)
	}
	pool.AllowTag = true
	if _, err := warm.Pool(pool); err != nil {
		t.Errorf("pool with pause image %s and AllowTag: %v", tag, err)
	}
}

// TestProbeURL: vLLM's URL needs its scheme, and the error says the form.
func TestProbeURL(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:8000", "https://vllm.svc:8443/", "http://localhost", ""} {
		if err := (warm.ProbeConfig{URL: ok}).Validate(); err != nil {
			t.Errorf("URL %q: %v", ok, err)
		}
	}
	for _, tc := range []struct{ url, want string }{
		{"127.0.0.1:8000", "e.g. http://127.0.0.1:8000"},
		{"localhost:8000", "e.g. http://localhost:8000"},
		{"ftp://127.0.0.1:8000", "want vLLM's base URL as http://HOST:PORT or https://HOST:PORT"},
		{"http://", "http://HOST:PORT"},
	} {
		err := (warm.ProbeConfig{URL: tc.url}).Validate()
		var fe *warm.FieldError
		if !errors.As(err, &fe) || fe.Field != "URL" || fe.Value != tc.url || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.url) {
			t.Errorf("URL %q: %v, want a *FieldError for URL with %q", tc.url, err, tc.want)
		}
	}
	if _, err := warm.Run(context.Background(), warm.ProbeConfig{URL: "127.0.0.1:8000"}); err == nil || !strings.Contains(err.Error(), "http://HOST:PORT") {
		t.Errorf("Run with a URL without scheme: %v", err)
	}
}

// TestValidateNamesTheField: each options type's Validate refuses a bad
// field with a *FieldError naming the field (its Go name, with the index
// of a list element) and its value, the renderers refuse it with the same
// error, and valid options pass.
func TestValidateNamesTheField(t *testing.T) {
	const tag = "registry.modelcar.test/models/llama:v1"
	prepull := func(mut func(*warm.PrepullOptions)) func() error {
		return func() error {
			o := gpuPrepull("team")
			mut(&o)
			err := o.Validate()
			if _, rerr := warm.Prepull(o); fmt.Sprint(rerr) != fmt.Sprint(err) {
				t.Errorf("Prepull(%+v) = %v, Validate = %v", o, rerr, err)
			}
			return err
		}
	}
	pool := func(mut func(*warm.PoolOptions)) func() error {
		return func() error {
			o := scheduledPool("team")
			mut(&o)
			err := o.Validate()
			if _, rerr := warm.Pool(o); fmt.Sprint(rerr) != fmt.Sprint(err) {
				t.Errorf("Pool(%+v) = %v, Validate = %v", o, rerr, err)
			}
			return err
		}
	}
	probe := func(mut func(*warm.ProbeConfig)) func() error {
		return func() error {
			var c warm.ProbeConfig
			mut(&c)
			return c.Validate()
		}
	}
	for _, tc := range []struct {
		name  string
		check func() error
		field string
		value any
		is    error
	}{
		{"prepull valid", prepull(func(o *warm.PrepullOptions) {}), "", nil, nil},
		{"prepull no image", prepull(func(o *warm.PrepullOptions) { o.Image = "" }), "Image", nil, warm.ErrRequired},
		{"prepull tag", prepull(func(o *warm.PrepullOptions) { o.Image = tag }), "Image", tag, warm.ErrNoDigest},
		{"prepull layout", prepull(func(o *warm.PrepullOptions) { o.Image = "oci:./llama" }), "Image", "oci:./llama", nil},
		{"prepull name", prepull(func(o *warm.PrepullOptions) { o.Name = "Bad_Name" }), "Name", "Bad_Name", nil},
		{"prepull namespace", prepull(func(o *warm.PrepullOptions) { o.Namespace = "Bad_NS" }), "Namespace", "Bad_NS", nil},
		{"prepull mode", prepull(func(o *warm.PrepullOptions) { o.Mode = "sidecar" }), "Mode", "sidecar", nil},
		{"prepull pause tag", prepull(func(o *warm.PrepullOptions) { o.PauseImage = "registry.k8s.io/pause:3.10" }), "PauseImage", "registry.k8s.io/pause:3.10", warm.ErrNoDigest},
		{"prepull priority class", prepull(func(o *warm.PrepullOptions) { o.PriorityClassName = "Bad_Class" }), "PriorityClassName", "Bad_Class", nil},
		{"pool valid", pool(func(o *warm.PoolOptions) {}), "", nil, nil},
		{"pool name", pool(func(o *warm.PoolOptions) { o.Name = "Bad_Name" }), "Name", "Bad_Name", nil},
		{"pool long name", pool(func(o *warm.PoolOptions) { o.Name = strings.Repeat("p", 45) }), "Name", strings.Repeat("p", 45), nil},
		{"pool namespace", pool(func(o *warm.PoolOptions) { o.Namespace = "Bad_NS" }), "Namespace", "Bad_NS", nil},
		{"pool no namespace", pool(func(o *warm.PoolOptions) { o.Namespace = "" }), "Namespace", nil, warm.ErrRequired},
		{"pool replicas", pool(func(o *warm.PoolOptions) { o.Replicas = -1 }), "Replicas", int32(-1), nil},
		{"pool gpus", pool(func(o *warm.PoolOptions) { o.GPUsPerPod = 0 }), "GPUsPerPod", int64(0), nil},
		{"pool gpu resource", pool(func(o *warm.PoolOptions) { o.GPUResource = "gpu" }), "GPUResource", "gpu", nil},
		{"pool pause tag", pool(func(o *warm.PoolOptions) { o.PauseImage = "registry.k8s.io/pause:3.10" }), "PauseImage", "registry.k8s.io/pause:3.10", warm.ErrNoDigest},
		{"pool priority class", pool(func(o *warm.PoolOptions) { o.PriorityClass = "Bad_Class" }), "PriorityClass", "Bad_Class", nil},
		{"pool priority", pool(func(o *warm.PoolOptions) { o.Priority = 5 }), "Priority", int32(5), nil},
		{"pool time zone", pool(func(o *warm.PoolOptions) { o.TimeZone = "Mars/Olympus" }), "TimeZone", "Mars/Olympus", nil},
		{"pool no modelcar image", pool(func(o *warm.PoolOptions) { o.ModelcarImage = "" }), "ModelcarImage", nil, warm.ErrRequired},
		{"pool modelcar tag", pool(func(o *warm.PoolOptions) { o.ModelcarImage = tag }), "ModelcarImage", tag, warm.ErrNoDigest},
		{"pool cron", pool(func(o *warm.PoolOptions) { o.Schedules[1].Cron = "0 20 * * 7" }), "Schedules[1]", warm.Schedule{Cron: "0 20 * * 7", Replicas: 0}, nil},
		{"pool same window", pool(func(o *warm.PoolOptions) { o.Schedules[1].Cron = o.Schedules[0].Cron }), "Schedules[1]", nil, nil},
		{"probe valid", probe(func(c *warm.ProbeConfig) {}), "", nil, nil},
		{"probe url", probe(func(c *warm.ProbeConfig) { c.URL = "localhost:8000" }), "URL", "localhost:8000", nil},
		{"probe empty workload", probe(func(c *warm.ProbeConfig) { c.Workload = []warm.Request{} }), "Workload", nil, nil},
		{"probe step", probe(func(c *warm.ProbeConfig) {
			c.Workload = []warm.Request{{PromptTokens: 1, MaxTokens: 1, Concurrency: 1}, {PromptTokens: 0, MaxTokens: 1, Concurrency: 1}}
		}), "Workload[1]", warm.Request{PromptTokens: 0, MaxTokens: 1, Concurrency: 1}, nil},
		{"probe api", probe(func(c *warm.ProbeConfig) { c.API = "grpc" }), "API", "grpc", nil},
	} {
		err := tc.check()
		if tc.field == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var fe *warm.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: %v, want a *FieldError for %s", tc.name, err, tc.field)
			continue
		}
		if tc.value != nil && fe.Value != tc.value {
			t.Errorf("%s: Value %#v, want %#v", tc.name, fe.Value, tc.value)
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%s: %v is not %v", tc.name, err, tc.is)
		}
	}
}
