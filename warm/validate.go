package warm

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	// The schedules' time zones are checked with time.LoadLocation; the
	// embedded database makes the check the same on every host, with or
	// without /usr/share/zoneinfo.
	_ "time/tzdata"

	"github.com/robfig/cron/v3"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/modelcar/modelcar/internal/fielderr"
)

// This file checks, before anything is rendered or applied, what the API
// server would otherwise reject halfway through an apply: object names,
// images, cron schedules and time zones. Each options type's Validate
// returns a *FieldError naming the first field it refuses, in field
// order; the renderers call it, and so can a caller that wants to check
// the options before it does anything else.

// FieldError is an options field whose value Validate refuses: Field is
// the field's Go name ("Image", "Schedules[1]"), Value its value and Err
// why (ErrNoDigest for an image without a digest, ErrRequired for a
// required field left empty). A CLI maps Field to its own flag.
type FieldError = fielderr.Error

// ErrRequired is the Err of a FieldError for a required field left empty.
var ErrRequired = fielderr.ErrRequired

// Validate checks the options as Prepull uses them: Image (required) and
// PauseImage pinned by digest unless AllowTag, Name (default
// PrepullName(Image)) a valid DaemonSet name and label value, Namespace,
// Mode and PriorityClassName. It returns a *FieldError.
func (o PrepullOptions) Validate() error {
	if o.Image == "" {
		return fielderr.Required("Image", "the modelcar to pull, REPO@sha256:...")
	}
	if _, err := imageDigest(o.Image, o.AllowTag); err != nil {
		return fielderr.New("Image", o.Image, err)
	}
	if o.Name != "" {
		if err := CheckPrepullName(o.Name); err != nil {
			return fielderr.New("Name", o.Name, err)
		}
	}
	if err := checkOptionalNamespace(o.Namespace); err != nil {
		return err
	}
	if _, err := ParsePrepullMode(string(o.Mode)); err != nil {
		return fielderr.New("Mode", string(o.Mode), err)
	}
	if o.PauseImage != "" {
		if _, err := imageDigest(o.PauseImage, o.AllowTag); err != nil {
			return fielderr.New("PauseImage", o.PauseImage, err)
		}
	}
	if o.PriorityClassName != "" {
		if err := checkPriorityClassName(o.PriorityClassName); err != nil {
			return fielderr.New("PriorityClassName", o.PriorityClassName, err)
		}
	}
	return nil
}

// Validate checks the options as Pool uses them, each empty field taking
// its default: Name (with the CronJob names the schedules derive from
// it), Namespace (required with Schedules), Replicas, GPUsPerPod,
// GPUResource, PauseImage and ModelcarImage (required with Schedules)
// pinned by digest unless AllowTag, PriorityClass, Priority, TimeZone and
// each of Schedules. It returns a *FieldError.
func (o PoolOptions) Validate() error {
	d := o.withDefaults()
	if err := CheckPoolName(d.Name, len(d.Schedules)); err != nil {
		return fielderr.New("Name", d.Name, err)
	}
	if err := checkOptionalNamespace(d.Namespace); err != nil {
		return err
	}
	if d.Replicas < 0 {
		return fielderr.New("Replicas", d.Replicas, errors.New("must not be negative"))
	}
	if d.GPUsPerPod <= 0 {
		return fielderr.New("GPUsPerPod", d.GPUsPerPod, errors.New("must be at least 1"))
	}
	if errs := validation.IsQualifiedName(d.GPUResource); len(errs) > 0 || !strings.Contains(d.GPUResource, "/") {
		return fielderr.New("GPUResource", d.GPUResource, errors.New("want an extended resource name such as nvidia.com/gpu"))
	}
	if _, err := imageDigest(d.PauseImage, d.AllowTag); err != nil {
		return fielderr.New("PauseImage", d.PauseImage, err)
	}
	if err := checkPriorityClassName(d.PriorityClass); err != nil {
		return fielderr.New("PriorityClass", d.PriorityClass, err)
	}
	if d.Priority > 0 {
		return fielderr.New("Priority", d.Priority, errors.New("must be negative, below the pods that should preempt the placeholders"))
	}
	if d.TimeZone != "" {
		if err := checkTimeZone(d.TimeZone); err != nil {
			return fielderr.New("TimeZone", d.TimeZone, err)
		}
	}
	if len(d.Schedules) == 0 {
		return nil
	}
	if d.Namespace == "" {
		return fielderr.Required("Namespace", "a pool with schedules names it in the scaler's RoleBinding and arguments")
	}
	if d.ModelcarImage == "" {
		return fielderr.Required("ModelcarImage", "a pool with schedules runs modelcar's own image as `modelcar warm scale`")
	}
	if _, err := imageDigest(d.ModelcarImage, d.AllowTag); err != nil {
		return fielderr.New("ModelcarImage", d.ModelcarImage, err)
	}
	seen := map[string]bool{}
	for i, s := range d.Schedules {
		field := fmt.Sprintf("Schedules[%d]", i)
		switch err := checkCron(s.Cron); {
		case s.Replicas < 0:
			return fielderr.New(field, s, errors.New("replicas must not be negative"))
		case err != nil:
			return fielderr.New(field, s, err)
		case seen[s.Cron]:
			return fielderr.New(field, s, fmt.Errorf("two windows start at %q", s.Cron))
		}
		seen[s.Cron] = true
	}
	return nil
}

// Validate checks the configuration as Run and Serve use it: URL (default
// DefaultURL) http:// or https:// with a host, each step of Workload in
// range (a nil Workload is DefaultWorkload, an empty one is refused), and
// API. It returns a *FieldError.
func (c ProbeConfig) Validate() error {
	if c.URL != "" {
		if err := checkURL(c.URL); err != nil {
			return fielderr.New("URL", c.URL, err)
		}
	}
	if c.Workload != nil && len(c.Workload) == 0 {
		return fielderr.New("Workload", nil, errors.New("empty warm-up workload"))
	}
	for i, r := range c.Workload {
		if err := r.validate(); err != nil {
			return fielderr.New(fmt.Sprintf("Workload[%d]", i), r, err)
		}
	}
	if _, err := ParseAPI(string(c.API)); err != nil {
		return fielderr.New("API", string(c.API), err)
	}
	return nil
}

// checkOptionalNamespace checks a Namespace field, if set.
func checkOptionalNamespace(ns string) error {
	if ns == "" {
		return nil
	}
	if err := CheckNamespace(ns); err != nil {
		return fielderr.New("Namespace", ns, err)
	}
	return nil
}

// CheckPrepullName checks the name of a pre-pull DaemonSet. It is the
// DaemonSet's name (a DNS-1123 subdomain) and its pods' and selector's
// app.kubernetes.io/instance label value, so at most 63 characters.
func CheckPrepullName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	errs := validation.IsDNS1123Subdomain(name)
	if len(name) > validation.LabelValueMaxLength {
		errs = append(errs, fmt.Sprintf("must be no more than %d characters (it is also a label value), not %d", validation.LabelValueMaxLength, len(name)))
	}
	return joinErrs(errs)
}

// CheckPoolName checks the name of a pool Deployment with the given number
// of schedules: a DNS-1123 label (the Deployment's name and its instance
// label value), and with schedules short enough for the CronJob names it
// derives, NAME-scale-N, at most 52 characters (a CronJob's Jobs add 11).
func CheckPoolName(name string, schedules int) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if err := joinErrs(validation.IsDNS1123Label(name)); err != nil {
		return err
	}
	if schedules > 0 {
		if n := len(cronJobName(name, schedules-1)); n > maxCronJobName {
			return fmt.Errorf("too long for the schedules' CronJob names: %s has %d characters, at most %d (a pool name of at most %d characters fits)",
				cronJobName(name, schedules-1), n, maxCronJobName, len(name)-(n-maxCronJobName))
		}
	}
	return nil
}

// CheckNamespace checks a namespace name: a DNS-1123 label.
func CheckNamespace(ns string) error { return joinErrs(validation.IsDNS1123Label(ns)) }

// checkPriorityClassName checks the name of a PriorityClass: a DNS-1123
// subdomain.
func checkPriorityClassName(name string) error { return joinErrs(validation.IsDNS1123Subdomain(name)) }

func joinErrs(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}

// ErrScheduleTimeZone is in the error for a schedule that names its own
// time zone (TZ= or CRON_TZ=), which a CronJob takes apart, in its
// timeZone (PoolOptions.TimeZone).
var ErrScheduleTimeZone = errors.New("TZ and CRON_TZ are not allowed in a schedule")

// validTimeZonePart is what the API server allows in each /-separated part
// of a CronJob's timeZone (k8s.io/kubernetes/pkg/apis/batch/validation).
var validTimeZonePart = regexp.MustCompile(`^[A-Za-z.\-_0-9+]{1,14}$`)

// checkTimeZone checks a CronJob time zone as the API server does: an
// IANA name such as Europe/Paris that time.LoadLocation knows (the
// package embeds the time zone database), not Local.
func checkTimeZone(tz string) error {
	if tz == "" {
		return errors.New("empty time zone")
	}
	for _, part := range strings.Split(tz, "/") {
		if part == "." || part == ".." || strings.HasPrefix(part, "-") || !validTimeZonePart.MatchString(part) {
			return errors.New("not an IANA time zone name (e.g. Europe/Paris, America/New_York, UTC)")
		}
	}
	if strings.EqualFold(tz, "Local") {
		return errors.New("Local is not allowed: name an IANA time zone (e.g. Europe/Paris, UTC)")
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return fmt.Errorf("unknown time zone: want an IANA name such as Europe/Paris, America/New_York or UTC (%v)", err)
	}
	return nil
}

// checkCron checks a CronJob schedule with the parser the API server uses
// (robfig/cron/v3's ParseStandard): five fields (minute 0-59, hour 0-23,
// day-of-month 1-31, month 1-12 or JAN-DEC, day-of-week 0-6 or SUN-SAT),
// or a macro such as @daily or @every 90m. TZ= and CRON_TZ= are refused:
// the time zone is the CronJob's timeZone (PoolOptions.TimeZone).
func checkCron(expr string) error {
	if strings.Contains(expr, "TZ") {
		return fmt.Errorf("%w: give the time zone apart (PoolOptions.TimeZone)", ErrScheduleTimeZone)
	}
	if _, err := cron.ParseStandard(expr); err != nil {
		return fmt.Errorf("%w (fields: minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-6)", err)
	}
	return nil
}

// checkURL checks vLLM's base URL for ProbeConfig.URL: http:// or
// https://, a host, and optionally a port and a path.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return nil
	}
	if !strings.Contains(s, "://") {
		return fmt.Errorf("no scheme: want vLLM's base URL as http://HOST:PORT or https://HOST:PORT, e.g. http://%s", strings.TrimLeft(s, "/"))
	}
	return fmt.Errorf("want vLLM's base URL as http://HOST:PORT or https://HOST:PORT, e.g. %s", DefaultURL)
}
