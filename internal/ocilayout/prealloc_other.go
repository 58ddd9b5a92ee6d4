//go:build !linux

package ocilayout

import (
	"errors"
	"os"
)

func preallocate(*os.File, int64) error { return errors.ErrUnsupported }
