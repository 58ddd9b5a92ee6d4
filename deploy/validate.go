package deploy

import (
	"errors"
	"fmt"
	"regexp"

	"helm.sh/helm/v3/pkg/chartutil"

	"github.com/modelcar/modelcar/internal/fielderr"
	"github.com/modelcar/modelcar/warm"
)

// FieldError is a RenderOptions or ReleaseOptions field that Validate or
// NewRelease refuses: Field is its Go name ("ReleaseName",
// "WarmPool.GPUsPerPod"), Value its value and Err why. It is the type of
// warm.FieldError, so one errors.As finds either.
type FieldError = fielderr.Error

// ValueError is a chart value that Validate refuses: Key is its dotted
// path in the values ("model.image"), Value the value (nil when it is not
// set) and Err why: warm.ErrNoDigest for an image not pinned by digest
// without its allowTag, warm.ErrRequired for a value the chart needs and
// does not have.
type ValueError struct {
	Key   string
	Value any
	Err   error
}

func (e *ValueError) Error() string {
	if v := fielderr.FormatValue(e.Value); v != "" {
		return e.Key + " " + v + ": " + e.Err.Error()
	}
	return e.Key + ": " + e.Err.Error()
}

func (e *ValueError) Unwrap() error { return e.Err }

// pinnedImage is how the chart tells an image pinned by digest: the
// pattern of model.image and modelcar.image in values.schema.json and of
// the templates' checks (_helpers.tpl).
var pinnedImage = regexp.MustCompile(`@sha256:[a-f0-9]{64}$`)

// Validate checks the options before Render: ReleaseName (required) and
// KubeVersion are *FieldErrors; the values, merged over the chart's
// values.yaml, are *ValueErrors, all of them joined (errors.Join): a
// model.image that is set and pinned by digest unless model.allowTag, and
// a modelcar.image pinned unless modelcar.allowTag and set when the chart
// runs it (warmProbe.enabled, model.delivery=initCopy). The chart's
// values.schema.json and templates check the rest when Render renders, as
// they do for helm's users.
func (o RenderOptions) Validate() error {
	if o.ReleaseName == "" {
		return fielderr.Required("ReleaseName", "helm template's NAME")
	}
	if o.KubeVersion != "" {
		if _, err := chartutil.ParseKubeVersion(o.KubeVersion); err != nil {
			return fielderr.New("KubeVersion", o.KubeVersion, err)
		}
	}
	ch, err := LoadChart()
	if err != nil {
		return err
	}
	// The values as the templates see them, for the few keys checked here
	// (chartutil.CoalesceValues would do, but it logs the conflicts it
	// finds, which Render's own coalescing logs again).
	get := func(key string) any {
		if v, ok := Lookup(o.Values, key); ok {
			return v
		}
		v, _ := Lookup(ch.Values, key)
		return v
	}
	var errs []error
	if err := checkImageValue(get, "model", true); err != nil {
		errs = append(errs, err)
	}
	needed := get("warmProbe.enabled") == true || get("model.delivery") == "initCopy"
	if err := checkImageValue(get, "modelcar", needed); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkImageValue checks PREFIX.image, with get the values: set if required, pinned by digest
// unless PREFIX.allowTag is true.
func checkImageValue(get func(key string) any, prefix string, required bool) error {
	key := prefix + ".image"
	image, _ := get(key).(string)
	allowTag := get(prefix + ".allowTag")
	switch {
	case image == "" && required:
		return &ValueError{Key: key, Err: warm.ErrRequired}
	case image == "", allowTag == true, pinnedImage.MatchString(image):
		return nil
	}
	return &ValueError{Key: key, Value: image, Err: fmt.Errorf("%w: pin it as REPO@sha256:<64 hex>, or set %s.allowTag=true", warm.ErrNoDigest, prefix)}
}

// Validate checks what Render's Validate checks, and the warm objects
// asked for: WarmPool's replicas and GPUs not negative, and a model
// delivery that Prepull can pre-pull.
func (o ReleaseOptions) Validate() error {
	if err := o.RenderOptions.Validate(); err != nil {
		return err
	}
	if p := o.WarmPool; p != nil {
		if p.Replicas < 0 {
			return fielderr.New("WarmPool.Replicas", p.Replicas, errors.New("must not be negative"))
		}
		if p.GPUsPerPod < 0 {
			return fielderr.New("WarmPool.GPUsPerPod", p.GPUsPerPod, errors.New("must not be negative"))
		}
	}
	if o.Prepull {
		if _, err := prepullMode(o.Values); err != nil {
			return fielderr.New("Prepull", nil, err)
		}
	}
	return nil
}
