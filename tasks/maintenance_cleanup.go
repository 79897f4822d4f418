package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/conveyor-run/conveyor/internal/store"
)

// TypeMaintenanceCleanup deletes finished business data older than a maximum
// age (CLEANUP_MAX_AGE by default) and reports how many rows it deleted.
const TypeMaintenanceCleanup = "maintenance:cleanup" // on the wire: never rename in place

// MaintenanceCleanupPayload is the payload of maintenance:cleanup.
type MaintenanceCleanupPayload struct {
	// MaxAgeHours overrides the worker's CLEANUP_MAX_AGE when positive,
	// between CleanupMinAge and CleanupMaxAgeLimit.
	MaxAgeHours int64 `json:"max_age_hours,omitempty"`
}

// Cleanup bounds. CleanupMinAge is the floor: nothing younger is ever
// deleted, whatever the payload or CLEANUP_MAX_AGE say, because the email
// log rows are the at-most-once keys of emails whose tasks may still be
// retried, and an order may still be read by its customer. The upper limit
// keeps the age a sane duration (a huge one overflowed time.Duration and
// put the cutoff in the future: everything was deleted).
const (
	CleanupMinAge      = 24 * time.Hour
	CleanupMaxAgeLimit = 10 * 365 * 24 * time.Hour
)

// TypeName implements Payload.
func (MaintenanceCleanupPayload) TypeName() string { return TypeMaintenanceCleanup }

// Opts implements Payload.
func (MaintenanceCleanupPayload) Opts() Opts {
	return Opts{Queue: "low", MaxRetry: 3, Timeout: 30 * time.Minute, Retention: 7 * 24 * time.Hour,
		RetryBase: time.Minute, RetryCap: 30 * time.Minute}
}

// Validate implements Payload.
func (p MaintenanceCleanupPayload) Validate() error {
	lo, hi := int64(CleanupMinAge/time.Hour), int64(CleanupMaxAgeLimit/time.Hour)
	if p.MaxAgeHours != 0 && (p.MaxAgeHours < lo || p.MaxAgeHours > hi) {
		return FieldErrors{"max_age_hours": fmt.Sprintf("must be between %d and %d hours (or omitted for CLEANUP_MAX_AGE)", lo, hi)}
	}
	return nil
}

// CleanupResult is the result of maintenance:cleanup: rows deleted per table.
type CleanupResult struct {
	Cutoff  time.Time        `json:"cutoff"`
	Deleted map[string]int64 `json:"deleted"`
}

func handleMaintenanceCleanup(d Deps) Handler[MaintenanceCleanupPayload] {
	return func(ctx context.Context, p MaintenanceCleanupPayload) error {
		age := d.CleanupMaxAge
		if p.MaxAgeHours > 0 {
			age = time.Duration(min(p.MaxAgeHours, int64(CleanupMaxAgeLimit/time.Hour))) * time.Hour
		}
		// Validate and config bound the age already; this is the last line
		// of defence for the data.
		age = min(max(age, CleanupMinAge), CleanupMaxAgeLimit)
		res := CleanupResult{Cutoff: time.Now().Add(-age).UTC(), Deleted: map[string]int64{}}
		steps := []struct {
			table string
			del   func(context.Context, time.Time) (int64, error)
		}{
			{"orders", store.NewOrders(d.DB).DeleteFinishedBefore},
			{"workflows", store.NewWorkflows(d.DB).DeleteFinishedBefore}, // finished ones, with their steps
			{"email_log", store.NewEmailLog(d.DB).DeleteBefore},
			{"outbox", store.NewOutbox(d.DB).DeleteSentBefore},             // sent rows only
			{"idempotency_keys", store.NewIdempotency(d.DB).DeleteExpired}, // by their own expiry
		}
		// Progress per table; a failed progress write is not worth failing
		// the cleanup for.
		progress := func(done int, msg string) {
			if err := ReportProgress(ctx, int64(done), int64(len(steps)), msg); err != nil {
				d.Log.WarnContext(ctx, "cleanup progress", "err", err)
			}
		}
		for i, s := range steps {
			progress(i, "deleting from "+s.table)
			n, err := s.del(ctx, res.Cutoff)
			if err != nil {
				return fmt.Errorf("cleanup %s: %w", s.table, err)
			}
			res.Deleted[s.table] = n
		}
		progress(len(steps), "done")
		d.Log.InfoContext(ctx, "cleanup done", "cutoff", res.Cutoff, "deleted", res.Deleted)
		return SetResult(ctx, res)
	}
}
