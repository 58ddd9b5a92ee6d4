package warm_test

import (
	"context"
	"errors"
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
		{"TZ=Europe/Paris 0 8 * * *", "--time-zone"},
		{"CRON_TZ=UTC 0 8 * * *", "TZ"},
	} {
		err := warm.CheckCron(tc.cron)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckCron(%q) = %v, want an error with %q", tc.cron, err, tc.want)
		}
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
	if err := warm.CheckImage(warm.DefaultPauseImage, false); err != nil {
		t.Errorf("DefaultPauseImage %s: %v", warm.DefaultPauseImage, err)
	}
	if !regexp.MustCompile(`@sha256:[0-9a-f]{64}$`).MatchString(warm.DefaultPauseImage) {
		t.Errorf("DefaultPauseImage %s is not REPO@sha256:<64 hex>", warm.DefaultPauseImage)
	}
	const tag = "registry.k8s.io/pause:3.10"
	pp := gpuPrepull("team")
	pp.PauseImage = tag
	if _, err := warm.Prepull(pp); !errors.Is(err, warm.ErrNoDigest) || !strings.Contains(err.Error(), "pause image") || !strings.Contains(err.Error(), tag) {
		t.Errorf("prepull with pause image %s: %v", tag, err)
	}
	pp.AllowTag = true
	if ds, err := warm.Prepull(pp); err != nil || ds.Spec.Template.Spec.Containers[0].Image != tag {
		t.Errorf("prepull with pause image %s and AllowTag: %v", tag, err)
	}
	pool := warm.PoolOptions{Replicas: 1, GPUsPerPod: 1, PauseImage: tag}
	if _, err := warm.Pool(pool); !errors.Is(err, warm.ErrNoDigest) || !strings.Contains(err.Error(), "pause image") {
		t.Errorf("pool with pause image %s: %v", tag, err)
	}
	pool.AllowTag = true
	if _, err := warm.Pool(pool); err != nil {
		t.Errorf("pool with pause image %s and AllowTag: %v", tag, err)
	}
}

// TestCheckURL: vLLM's URL needs its scheme, and the error says the form.
func TestCheckURL(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:8000", "https://vllm.svc:8443/", "http://localhost"} {
		if err := warm.CheckURL(ok); err != nil {
			t.Errorf("CheckURL(%q): %v", ok, err)
		}
	}
	for _, tc := range []struct{ url, want string }{
		{"127.0.0.1:8000", "e.g. http://127.0.0.1:8000"},
		{"localhost:8000", "e.g. http://localhost:8000"},
		{"ftp://127.0.0.1:8000", "want http://HOST:PORT or https://HOST:PORT"},
		{"http://", "want http://HOST:PORT"},
	} {
		if err := warm.CheckURL(tc.url); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.url) {
			t.Errorf("CheckURL(%q) = %v, want an error with %q", tc.url, err, tc.want)
		}
	}
	if _, err := warm.Run(context.Background(), warm.ProbeConfig{URL: "127.0.0.1:8000"}); err == nil || !strings.Contains(err.Error(), "http://HOST:PORT") {
		t.Errorf("Run with a URL without scheme: %v", err)
	}
}
