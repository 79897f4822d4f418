package httpapi

import (
	"time"
)

// maxExpiry bounds how far ahead a task's deadline may be.
const maxExpiry = 365 * 24 * time.Hour

// parseExpiry reads a request's expires_in (seconds from now) or
// expires_at (RFC 3339): the deadline after which the task must not start.
// Problems go into fields under the field's name; nil: no deadline given.
// Shared by every endpoint that enqueues.
func parseExpiry(expiresIn *int64, expiresAt string, fields map[string]string) *time.Time {
	now := time.Now()
	switch {
	case expiresIn != nil && expiresAt != "":
		fields["expires_at"] = "give either expires_in or expires_at, not both"
	case expiresIn != nil:
		if *expiresIn < 1 || *expiresIn > int64(maxExpiry/time.Second) {
			fields["expires_in"] = "must be between 1 and 31536000 seconds"
			return nil
		}
		at := now.Add(time.Duration(*expiresIn) * time.Second)
		return &at
	case expiresAt != "":
		at, err := time.Parse(time.RFC3339, expiresAt)
		switch {
		case err != nil:
			fields["expires_at"] = "must be an RFC 3339 time such as 2026-01-02T15:04:05Z"
		case !at.After(now):
			fields["expires_at"] = "must be in the future"
		case at.After(now.Add(maxExpiry)):
			fields["expires_at"] = "must be within a year"
		default:
			return &at
		}
	}
	return nil
}
