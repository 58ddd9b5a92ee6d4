package fielderr

import (
	"errors"
	"testing"
	"time"
)

type stringer struct{}

func (stringer) String() string { return "s=1" }

// TestError: the message names the field and the value (left out when
// empty), errors.Is finds what Err wraps, and Name drops the indexes.
func TestError(t *testing.T) {
	sentinel := errors.New("sentinel")
	for _, c := range []struct {
		err        *Error
		msg, name  string
		isRequired bool
	}{
		{New("Image", "r.test/m:v1", sentinel), `Image "r.test/m:v1": sentinel`, "Image", false},
		{New("Replicas", int32(-1), errors.New("must not be negative")), "Replicas -1: must not be negative", "Replicas", false},
		{New("Schedules[1]", stringer{}, sentinel), `Schedules[1] "s=1": sentinel`, "Schedules", false},
		{New("Steps[0].Cron[2]", "", sentinel), "Steps[0].Cron[2]: sentinel", "Steps.Cron", false},
		{New("Workload", []int{}, sentinel), "Workload: sentinel", "Workload", false},
		{New("Timeout", 2*time.Second, sentinel), `Timeout "2s": sentinel`, "Timeout", false},
		{Required("Image", "the modelcar"), "Image: required: the modelcar", "Image", true},
		{Required("WarmPool.GPUsPerPod", ""), "WarmPool.GPUsPerPod: required", "WarmPool.GPUsPerPod", true},
	} {
		if got := c.err.Error(); got != c.msg {
			t.Errorf("Error() = %q, want %q", got, c.msg)
		}
		if got := c.err.Name(); got != c.name {
			t.Errorf("%s: Name() = %q, want %q", c.err.Field, got, c.name)
		}
		if errors.Is(c.err, ErrRequired) != c.isRequired || (!c.isRequired && !errors.Is(c.err, c.err.Err)) {
			t.Errorf("%s: errors.Is(ErrRequired) = %v", c.err.Field, errors.Is(c.err, ErrRequired))
		}
	}
}
