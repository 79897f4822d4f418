package store

import (
	"context"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// Schedule is a row of schedules: a cron entry defined through the API. The
// scheduler validates rows itself (a row written by hand may be wrong), so
// the fields are stored as given.
type Schedule struct {
	ID       int64  `db:"id"`
	Name     string `db:"name"`
	Spec     string `db:"spec"`
	Timezone string `db:"timezone"`
	TaskType string `db:"task_type"`
	Payload  []byte `db:"payload"` // JSON; nil: the type's zero payload
	Queue    string `db:"queue"`   // empty: the type's default queue
	// Optional task options; nil means the task type's default.
	MaxRetry       *int `db:"max_retry"`
	TimeoutSeconds *int `db:"timeout_seconds"`
	// CatchupWindowSeconds overrides SCHEDULER_CATCHUP_WINDOW when set.
	CatchupWindowSeconds *int       `db:"catchup_window_seconds"`
	Enabled              bool       `db:"enabled"`
	CreatedAt            time.Time  `db:"created_at"`
	UpdatedAt            time.Time  `db:"updated_at"`
	LastFiredAt          *time.Time `db:"last_fired_at"`
	LastTaskID           string     `db:"last_task_id"`
	// ExpiresInSeconds: a fire not started this long after its tick is
	// archived unrun; nil: the task type's default.
	ExpiresInSeconds *int `db:"expires_in_seconds"`
}

// Schedules is the schedules repository.
type Schedules struct{ q Querier }

// NewSchedules returns a repository over q.
func NewSchedules(q Querier) *Schedules { return &Schedules{q: q} }

const scheduleCols = `id, name, spec, timezone, task_type, payload, queue, max_retry, timeout_seconds,
	catchup_window_seconds, enabled, created_at, updated_at, last_fired_at, last_task_id, expires_in_seconds`

// List returns every schedule, enabled or not, sorted by name.
func (r *Schedules) List(ctx context.Context) ([]Schedule, error) {
	var out []Schedule
	err := r.q.SelectContext(ctx, &out, `SELECT `+scheduleCols+` FROM schedules ORDER BY name`)
	return out, mapErr(err, "list schedules")
}

// Get returns the schedule named name.
func (r *Schedules) Get(ctx context.Context, name string) (Schedule, error) {
	var s Schedule
	err := r.q.GetContext(ctx, &s, `SELECT `+scheduleCols+` FROM schedules WHERE name = $1`, name)
	return s, mapErr(err, fmt.Sprintf("get schedule %q", name))
}

// Create inserts s and fills in the stored row. A taken name is ErrConflict.
func (r *Schedules) Create(ctx context.Context, s *Schedule) error {
	err := r.q.GetContext(ctx, s,
		`INSERT INTO schedules (name, spec, timezone, task_type, payload, queue, max_retry, timeout_seconds,
		                        catchup_window_seconds, enabled, expires_in_seconds)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING `+scheduleCols,
		s.Name, s.Spec, s.Timezone, s.TaskType, nullJSON(s.Payload), s.Queue, s.MaxRetry, s.TimeoutSeconds,
		s.CatchupWindowSeconds, s.Enabled, s.ExpiresInSeconds)
	return mapErr(err, fmt.Sprintf("create schedule %q", s.Name))
}

// Update replaces the definition of the schedule named s.Name, sets its
// updated_at (the scheduler fires no tick of the new definition from before
// it) and fills in the stored row.
func (r *Schedules) Update(ctx context.Context, s *Schedule) error {
	err := r.q.GetContext(ctx, s,
		`UPDATE schedules SET spec = $2, timezone = $3, task_type = $4, payload = $5, queue = $6,
		        max_retry = $7, timeout_seconds = $8, catchup_window_seconds = $9, enabled = $10,
		        expires_in_seconds = $11, updated_at = now()
		 WHERE name = $1 RETURNING `+scheduleCols,
		s.Name, s.Spec, s.Timezone, s.TaskType, nullJSON(s.Payload), s.Queue, s.MaxRetry, s.TimeoutSeconds,
		s.CatchupWindowSeconds, s.Enabled, s.ExpiresInSeconds)
	return mapErr(err, fmt.Sprintf("update schedule %q", s.Name))
}

// Delete removes the schedule named name.
func (r *Schedules) Delete(ctx context.Context, name string) error {
	res, err := r.q.ExecContext(ctx, `DELETE FROM schedules WHERE name = $1`, name)
	if err != nil {
		return mapErr(err, fmt.Sprintf("delete schedule %q", name))
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("delete schedule %q: %w", name, ErrNotFound)
	}
	return nil
}

// MarkFired records that tick of the schedule named name was enqueued as
// taskID. It never moves last_fired_at backwards (two leaders for a moment,
// a late retry) and leaves updated_at alone. A missing row is not an error:
// the schedule may have been deleted since.
func (r *Schedules) MarkFired(ctx context.Context, name string, tick time.Time, taskID string) error {
	_, err := r.q.ExecContext(ctx,
		`UPDATE schedules SET last_fired_at = $2, last_task_id = $3
		 WHERE name = $1 AND (last_fired_at IS NULL OR last_fired_at < $2)`, name, tick, taskID)
	return mapErr(err, fmt.Sprintf("mark schedule %q fired", name))
}

func nullJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return []byte(b)
}

// ScheduleChannel is the PostgreSQL notification channel a trigger signals
// on every change to a schedule's definition.
const ScheduleChannel = "schedules_changed"

// WatchSchedules listens on a connection of its own (dbURL) for schedule
// changes until ctx ends. The returned channel receives a value after each
// change and after each reconnection (changes may have been missed). It
// never blocks the listener: bursts collapse into one value.
func WatchSchedules(ctx context.Context, dbURL string, onErr func(error)) (<-chan struct{}, error) {
	l := pq.NewListener(dbURL, time.Second, 30*time.Second, func(ev pq.ListenerEventType, err error) {
		if err != nil && onErr != nil {
			onErr(err)
		}
	})
	if err := l.Listen(ScheduleChannel); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen %s: %w", ScheduleChannel, err)
	}
	out := make(chan struct{}, 1)
	go func() {
		defer l.Close()
		for {
			select {
			case <-ctx.Done():
				return
			case <-l.Notify: // nil after a reconnection: report it as a change too
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out, nil
}
