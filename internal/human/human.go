// Package human formats byte counts as modelcar prints them to people:
// binary units from github.com/docker/go-units, one decimal and a space
// ("1.5 GiB"), whole bytes below 1 KiB ("512 B"). It owns that format;
// commands and developer tools import it instead of keeping copies.
package human

import (
	"fmt"

	units "github.com/docker/go-units"
)

// binaryAbbrs are go-units' binary unit names (its own list is not
// exported).
var binaryAbbrs = []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"}

// Bytes formats n: "512 B", "1.5 KiB", "10.0 GiB".
//
// Not units.BytesSize itself: it prints "1.5GiB" and "1.001KiB" (%.4g,
// no space), and the README and scripts read modelcar's "1.5 GiB".
func Bytes(n int64) string {
	if n < units.KiB {
		return fmt.Sprintf("%d B", n)
	}
	return units.CustomSize("%.1f %s", float64(n), units.KiB, binaryAbbrs)
}
