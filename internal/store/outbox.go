package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// OutboxEntry is a row of outbox: one task that a committed business write
// must trigger. ID is also the asynq task ID.
type OutboxEntry struct {
	ID        string          `db:"id" json:"id"`
	TaskType  string          `db:"task_type" json:"task_type"`
	Payload   json.RawMessage `db:"payload" json:"payload"`
	RequestID string          `db:"request_id" json:"request_id"`
	// Options are per-row task options and headers (TaskOptions); {}: the
	// type's defaults.
	Options       json.RawMessage `db:"options" json:"options,omitempty"`
	Attempts      int             `db:"attempts" json:"attempts"`
	LastError     string          `db:"last_error" json:"last_error"`
	NextAttemptAt time.Time       `db:"next_attempt_at" json:"next_attempt_at"`
	CreatedAt     time.Time       `db:"created_at" json:"created_at"`
	SentAt        *time.Time      `db:"sent_at" json:"sent_at"`
	// DeadAt is set when the row was given up: it can never become a task
	// (LastError says why) until an operator requeues it.
	DeadAt *time.Time `db:"dead_at" json:"dead_at"`
}

// Outbox is the outbox repository. Add belongs in the business write's
// transaction; Take (the dispatcher's) and TakeDue (the relay's) in the
// transaction that sends the rows.
type Outbox struct{ q Querier }

// NewOutbox returns a repository over q.
func NewOutbox(q Querier) *Outbox { return &Outbox{q: q} }

// Add inserts a task of taskType with an already validated payload and
// returns its ID (the future task ID). Nothing is notified: once the
// surrounding transaction has committed, the producer hands the ID to a
// queue.Dispatcher, and the relay's poll picks up any row none sent.
func (r *Outbox) Add(ctx context.Context, taskType string, payload json.RawMessage, requestID string) (string, error) {
	var id string
	err := r.q.QueryRowxContext(ctx,
		`INSERT INTO outbox (task_type, payload, request_id) VALUES ($1, $2, $3) RETURNING id`,
		taskType, []byte(payload), requestID).Scan(&id)
	if err != nil {
		return "", mapErr(err, "add outbox "+taskType)
	}
	return id, nil
}

// TaskOptions are the per-row options the relay applies on top of the task
// type's defaults (workflow steps use them). Zero fields keep the default.
type TaskOptions struct {
	Queue     string            `json:"queue,omitempty"`
	MaxRetry  *int              `json:"max_retry,omitempty"`
	Timeout   int64             `json:"timeout,omitempty"`   // seconds
	Countdown int64             `json:"countdown,omitempty"` // seconds after the relay enqueues it
	Headers   map[string]string `json:"headers,omitempty"`
}

// The sender takes rows (TakeDue for the relay, Take for a dispatcher) in
// one statement that locks them (FOR UPDATE SKIP LOCKED: rows another relay
// or dispatcher holds are skipped, so nobody sends a row twice at once),
// marks them sent and returns them. The caller enqueues them before its
// transaction commits and puts back those it could not send (MarkFailed,
// MarkDead): until the commit nobody else sees the marks, and a transaction
// that never commits (the process died mid-batch) leaves its rows unsent.
// Locking and marking in one statement saves a round trip per batch over a
// SELECT … FOR UPDATE followed by an UPDATE of the rows sent. The locked IDs
// are gathered in an ARRAY(…) so that the update finds each row through the
// primary key: joined to the locking subquery, the planner hashed it and
// scanned the whole table when the table was small.

// takeCols are the columns a taken row carries: what the sender needs. The
// other fields of OutboxEntry are left zero.
const takeCols = `o.id, o.task_type, o.payload, o.request_id, o.options, o.attempts`

// TakeDue takes up to limit unsent rows whose next attempt has been due for
// at least grace, oldest first (see above). q must be a transaction; the
// locks last until it ends, and it commits asynchronously (asyncCommitSQL).
func (r *Outbox) TakeDue(ctx context.Context, limit int, grace time.Duration) ([]OutboxEntry, error) {
	out := []OutboxEntry{}
	err := r.q.SelectContext(ctx, &out, takeDueSQL, limit, max(grace, 0).Seconds())
	return out, mapErr(err, "take due outbox rows")
}

// takeDueSQL orders by next_attempt_at alone, the key of outbox_due_idx, so
// that the scan stops after limit rows. Ordering by created_at as well (a
// tie between rows of one transaction, which share both times) made
// PostgreSQL read and sort every due row on each poll: a relay polling
// while a producer had just added a 10,000-step group read all 10,000 rows
// per batch of 100 (5.6 ms a poll on the bench, a quarter of PostgreSQL's
// time in a chord).
const takeDueSQL = `UPDATE outbox o SET sent_at = now(), last_error = ''
	 WHERE o.id = ANY (ARRAY(SELECT id FROM outbox WHERE sent_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now() - make_interval(secs => $2)
	                          ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED))
	   AND ` + asyncCommitSQL + `
	RETURNING ` + takeCols

// asyncCommitSQL, a condition of the take statements, makes the taking
// transaction commit asynchronously, as SET LOCAL synchronous_commit = off
// would, without a round trip of its own (an uncorrelated subquery: run
// once per statement, before any row is marked). The marks are worth no
// WAL flush: lost in a crash of PostgreSQL, they only make their rows due
// again, and a row sent twice is still one task (see queue's
// outboxSender). A transaction that takes rows only records failures
// besides.
const asyncCommitSQL = `(SELECT set_config('synchronous_commit', 'off', true)) = 'off'`

// Take takes the rows among ids that are still to send (not sent, not
// dead), skipping rows another transaction holds: a row the relay (or
// another dispatcher) has locked is theirs to send. IDs of rows that do not
// exist — a rolled-back transaction's — are ignored. q must be a
// transaction; the locks last until it ends, and it commits
// asynchronously (asyncCommitSQL), as for TakeDue.
func (r *Outbox) Take(ctx context.Context, ids []string) ([]OutboxEntry, error) {
	out := []OutboxEntry{}
	err := r.q.SelectContext(ctx, &out, takeSQL, pq.Array(ids))
	return out, mapErr(err, "take outbox rows")
}

// takeSQL writes "(sent_at IS NULL) IS NOT FALSE", the same condition
// (IS NULL is never null), in a form from which the planner cannot infer
// outbox_due_idx's predicate: the dispatcher runs Take as a prepared
// statement, whose generic plan does not know how many IDs it gets, and
// with statistics taken while few rows were unsent the partial index looks
// nearly empty, so the plan walked it, through every unsent row, for each
// batch (10,000 entries a batch while a 10,000-step group was being sent,
// 10 ms a call) instead of probing the primary key for each ID.
const takeSQL = `UPDATE outbox o SET sent_at = now(), last_error = ''
	 WHERE o.id = ANY (ARRAY(SELECT id FROM outbox WHERE id = ANY($1::uuid[]) AND (sent_at IS NULL) IS NOT FALSE AND dead_at IS NULL
	                          FOR UPDATE SKIP LOCKED))
	   AND ` + asyncCommitSQL + `
	RETURNING ` + takeCols

// MarkSent records that rows ids were enqueued, in one statement (Take and
// TakeDue do it as they lock the rows).
func (r *Outbox) MarkSent(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := r.q.ExecContext(ctx, `UPDATE outbox SET sent_at = now(), last_error = '' WHERE id = ANY($1::uuid[])`,
		pq.Array(ids))
	return mapErr(err, fmt.Sprintf("mark %d outbox rows sent", len(ids)))
}

// MarkFailed records a failed attempt of row id and schedules the next one
// after backoff. A row taken in this transaction is unsent again.
func (r *Outbox) MarkFailed(ctx context.Context, id, reason string, backoff time.Duration) error {
	_, err := r.q.ExecContext(ctx,
		`UPDATE outbox SET sent_at = NULL, attempts = attempts + 1, last_error = $2,
		        next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1`,
		id, reason, backoff.Seconds())
	return mapErr(err, "mark outbox failed "+id)
}

// MarkDead gives up row id: it can never become a task, for reason. It is
// no longer due and no longer pending (nor sent, if it was taken in this
// transaction); RequeueDead brings it back.
func (r *Outbox) MarkDead(ctx context.Context, id, reason string) error {
	_, err := r.q.ExecContext(ctx,
		`UPDATE outbox SET sent_at = NULL, attempts = attempts + 1, last_error = $2, dead_at = now()
		  WHERE id = $1`, id, reason)
	return mapErr(err, "mark outbox dead "+id)
}

// Dead lists up to limit dead rows, oldest first.
func (r *Outbox) Dead(ctx context.Context, limit int) ([]OutboxEntry, error) {
	out := []OutboxEntry{}
	err := r.q.SelectContext(ctx, &out,
		`SELECT * FROM outbox WHERE dead_at IS NOT NULL ORDER BY dead_at, created_at LIMIT $1`, limit)
	return out, mapErr(err, "select dead outbox rows")
}

// RequeueDead makes dead rows due again with a fresh attempt count (after
// the fix is deployed): the row with id, or every dead row if id is empty.
// It returns how many rows it requeued.
func (r *Outbox) RequeueDead(ctx context.Context, id string) (int64, error) {
	q := `UPDATE outbox SET dead_at = NULL, attempts = 0, next_attempt_at = now() WHERE dead_at IS NOT NULL`
	args := []any{}
	if id != "" {
		q += ` AND id = $1`
		args = append(args, id)
	}
	res, err := r.q.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, mapErr(err, "requeue dead outbox rows")
	}
	return res.RowsAffected()
}

// Get returns row id.
func (r *Outbox) Get(ctx context.Context, id string) (OutboxEntry, error) {
	var e OutboxEntry
	err := r.q.GetContext(ctx, &e, `SELECT * FROM outbox WHERE id = $1`, id)
	return e, mapErr(err, "get outbox "+id)
}

// OutboxStats summarises unsent rows for GET /api/v1/queues.
type OutboxStats struct {
	Pending  int64 `db:"pending" json:"outbox_pending"`   // not yet enqueued (dead rows excluded)
	Retrying int64 `db:"retrying" json:"outbox_retrying"` // of which have failed at least once
	Dead     int64 `db:"dead" json:"outbox_dead"`         // given up: can never become a task
	// OldestSeconds is the age of the oldest unsent row (0 if none).
	OldestSeconds float64 `db:"oldest_seconds" json:"outbox_oldest_seconds"`
}

// Stats counts unsent rows.
func (r *Outbox) Stats(ctx context.Context) (OutboxStats, error) {
	var s OutboxStats
	err := r.q.GetContext(ctx, &s,
		`SELECT count(*) FILTER (WHERE dead_at IS NULL) AS pending,
		        count(*) FILTER (WHERE dead_at IS NULL AND attempts > 0) AS retrying,
		        count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
		        COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE dead_at IS NULL)), 0)::float8 AS oldest_seconds
		   FROM outbox WHERE sent_at IS NULL`)
	return s, mapErr(err, "outbox stats")
}

// DeleteSentBefore deletes rows sent before cutoff (maintenance:cleanup).
// Unsent rows are never deleted.
func (r *Outbox) DeleteSentBefore(ctx context.Context, cutoff time.Time) (int64, error) {
	res, err := r.q.ExecContext(ctx, `DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1`, cutoff)
	if err != nil {
		return 0, mapErr(err, "delete sent outbox rows")
	}
	return res.RowsAffected()
}
