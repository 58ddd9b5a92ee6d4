// Package fielderr owns the error that an options type's Validate returns
// for a field it refuses: the field's name, its value and why, and nothing
// about where the value came from. The library packages re-export it
// (warm.FieldError, deploy.FieldError are this type), so a caller such as
// the CLI finds it with errors.As and names its own flag for the field.
package fielderr

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
)

// ErrRequired is the Err of an Error for a required field left empty.
var ErrRequired = errors.New("required")

// Error is an options field whose value is refused.
type Error struct {
	// Field is the field's Go name in its options type, with an index for
	// an element of a list ("Image", "Schedules[1]") and a dot for a
	// field of a field ("WarmPool.GPUsPerPod").
	Field string
	// Value is the value refused (nil or empty when the field is missing).
	Value any
	// Err says why; errors.Is finds the sentinel errors it wraps
	// (ErrRequired, warm.ErrNoDigest).
	Err error
}

// New returns an *Error for field, value and why.
func New(field string, value any, why error) *Error {
	return &Error{Field: field, Value: value, Err: why}
}

// Required returns an *Error for the required field left empty; detail,
// if any, says what the field is for.
func Required(field, detail string) *Error {
	why := ErrRequired
	if detail != "" {
		why = fmt.Errorf("%w: %s", ErrRequired, detail)
	}
	return &Error{Field: field, Err: why}
}

func (e *Error) Error() string {
	if v := FormatValue(e.Value); v != "" {
		return e.Field + " " + v + ": " + e.Err.Error()
	}
	return e.Field + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Name is Field without its indexes: "Schedules" for "Schedules[1]",
// "Steps.Cron" for "Steps[0].Cron".
func (e *Error) Name() string {
	var b strings.Builder
	depth := 0
	for _, r := range e.Field {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// FormatValue writes a refused value as the messages quote it: a string
// (or a fmt.Stringer) quoted, a number or bool as is, and "" for a nil or
// empty value, which a message leaves out.
func FormatValue(v any) string {
	if v == nil {
		return ""
	}
	switch x := v.(type) {
	case string:
		if x == "" {
			return ""
		}
		return fmt.Sprintf("%q", x)
	case fmt.Stringer:
		return fmt.Sprintf("%q", x.String())
	}
	if rv := reflect.ValueOf(v); (rv.Kind() == reflect.Slice || rv.Kind() == reflect.Map) && rv.Len() == 0 {
		return ""
	}
	return fmt.Sprint(v)
}
