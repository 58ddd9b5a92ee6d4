package warm

import "time"

// SetRetryBackoff shortens the wait before a failed warm-up is retried.
func SetRetryBackoff(d time.Duration) (restore func()) {
	old := retryBackoff
	retryBackoff = d
	return func() { retryBackoff = old }
}

// The single-value checks behind Validate, for their own tests.
var (
	CheckCron     = checkCron
	CheckTimeZone = checkTimeZone
)
