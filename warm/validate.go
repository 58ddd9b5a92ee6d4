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
)

// This file checks, before anything is rendered or applied, what the API
// server would otherwise reject halfway through an apply: object names,
// cron schedules and time zones.

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

// CheckImage checks an image reference as Prepull and Pool do: a
// reference to a registry, pinned by digest (REPO@sha256:...) unless
// allowTag; a tag without allowTag is ErrNoDigest.
func CheckImage(image string, allowTag bool) error {
	_, err := imageDigest(image, allowTag)
	return err
}

// CheckNamespace checks a namespace name: a DNS-1123 label.
func CheckNamespace(ns string) error { return joinErrs(validation.IsDNS1123Label(ns)) }

// CheckPriorityClassName checks the name of a PriorityClass: a DNS-1123
// subdomain.
func CheckPriorityClassName(name string) error { return joinErrs(validation.IsDNS1123Subdomain(name)) }

func joinErrs(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}

// validTimeZonePart is what the API server allows in each /-separated part
// of a CronJob's timeZone (k8s.io/kubernetes/pkg/apis/batch/validation).
var validTimeZonePart = regexp.MustCompile(`^[A-Za-z.\-_0-9+]{1,14}$`)

// CheckTimeZone checks a CronJob time zone as the API server does: an
// IANA name such as Europe/Paris that time.LoadLocation knows (the
// package embeds the time zone database), not Local.
func CheckTimeZone(tz string) error {
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

// CheckCron checks a CronJob schedule with the parser the API server uses
// (robfig/cron/v3's ParseStandard): five fields (minute 0-59, hour 0-23,
// day-of-month 1-31, month 1-12 or JAN-DEC, day-of-week 0-6 or SUN-SAT),
// or a macro such as @daily or @every 90m. TZ= and CRON_TZ= are refused:
// the time zone is the CronJob's timeZone (--time-zone).
func CheckCron(expr string) error {
	if strings.Contains(expr, "TZ") {
		return errors.New("TZ and CRON_TZ are not allowed in a schedule: give the time zone apart (--time-zone)")
	}
	if _, err := cron.ParseStandard(expr); err != nil {
		return fmt.Errorf("%w (fields: minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-6)", err)
	}
	return nil
}

// CheckURL checks vLLM's base URL for ProbeConfig.URL: http:// or
// https://, a host, and optionally a port and a path.
func CheckURL(s string) error {
	u, err := url.Parse(s)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return nil
	}
	if !strings.Contains(s, "://") {
		return fmt.Errorf("vLLM URL %q has no scheme: want http://HOST:PORT or https://HOST:PORT, e.g. http://%s", s, strings.TrimLeft(s, "/"))
	}
	return fmt.Errorf("vLLM URL %q: want http://HOST:PORT or https://HOST:PORT, e.g. %s", s, DefaultURL)
}
