package main

import (
	"errors"
	"fmt"

	"github.com/modelcar/modelcar/internal/fielderr"
	"github.com/modelcar/modelcar/warm"
)

// fieldFlags maps the fields of a library's options (FieldError.Name:
// "Image", "Schedules") to the flags of one command that set them. The
// key "AllowTag", when present, names the flag that accepts an image
// without a digest, which the fix for ErrNoDigest then offers.
type fieldFlags map[string]string

// usage returns err, from an options type's Validate or a renderer, as a
// usage error. A *FieldError (warm's, deploy's and plan's are one type)
// for a field that a flag of m sets is written as that flag, its value and
// why, with the fix for an image without a digest; other errors pass as
// they are.
func (m fieldFlags) usage(err error) error { return usageError{m.explain(err)} }

// explain is usage without making the error a usage error.
func (m fieldFlags) explain(err error) error {
	var fe *fielderr.Error
	if !errors.As(err, &fe) {
		return err
	}
	flag, ok := m[fe.Name()]
	if !ok {
		return err
	}
	return flagValueError(flag, fe.Value, fe.Err, m["AllowTag"])
}

// flagValueError writes why the value of flag is refused. For an image without
// a digest it says what to do: pin it or, for a command with one, pass
// the flag allowTag.
func flagValueError(flag string, value any, why error, allowTag string) error {
	v := fielderr.FormatValue(value)
	if v != "" {
		v = " " + v
	}
	switch {
	case errors.Is(why, fielderr.ErrRequired):
		return fmt.Errorf("%s is %w", flag, why)
	case errors.Is(why, warm.ErrNoDigest):
		fix := "pin the image as REPO@sha256:... ('modelcar push' prints the digest)"
		if allowTag != "" {
			fix += " or pass " + allowTag
		}
		return fmt.Errorf("%s%s: %w: a tag can move, and each node would pull whatever it names when it pulls; %s", flag, v, why, fix)
	}
	return fmt.Errorf("%s%s: %w", flag, v, why)
}
