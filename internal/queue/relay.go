package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// RelayOptions tune a Relay; zero values take the defaults.
type RelayOptions struct {
	Poll      time.Duration // fallback polling interval; default 1 s
	Batch     int           // rows per transaction; default 100
	RetryBase time.Duration // first backoff of a failing row; default 1 s
	RetryCap  time.Duration // longest backoff; default 1 min
	// MinRetention is the shortest time an enqueued task stays in Redis, so
	// that re-enqueueing a row after a crash is recognised by its task ID.
	// Default 24 h; see Client.Retention.
	MinRetention time.Duration
	// DeadAttempts is how many times a row that cannot become a task
	// (unknown type, invalid payload) is tried before it is marked dead;
	// default 8 (about 3 minutes with the default backoff), so a relay of
	// an older version during a rolling deploy leaves a newer type to a
	// newer relay rather than killing it.
	DeadAttempts int
}

func (o RelayOptions) withDefaults() RelayOptions {
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Batch <= 0 {
		o.Batch = 100
	}
	if o.RetryBase <= 0 {
		o.RetryBase = time.Second
	}
	if o.RetryCap <= 0 {
		o.RetryCap = time.Minute
	}
	if o.MinRetention <= 0 {
		o.MinRetention = 24 * time.Hour
	}
	if o.DeadAttempts <= 0 {
		o.DeadAttempts = 8
	}
	return o
}

// Relay moves committed outbox rows into asynq: the second half of the
// transactional outbox. Each row is enqueued with asynq.TaskID(row id) and
// marked sent in the transaction that locked it (SELECT … FOR UPDATE SKIP
// LOCKED), so:
//
//   - several relays (api replicas) never send the same row concurrently;
//   - a crash after enqueueing but before the commit re-enqueues the row,
//     which asynq refuses as a duplicate task ID: treated as sent;
//   - a failing row (Redis down) is retried with exponential backoff and
//     counted in outbox_pending until it goes out;
//   - a row that can never become a task (its type unknown to this
//     version, its payload no longer valid) is marked dead with its reason
//     after DeadAttempts tries, leaving outbox_pending for outbox_dead,
//     until an operator requeues it (`api outbox requeue`).
//
// It wakes on LISTEN/NOTIFY (store.OutboxChannel) and polls as a fallback.
type Relay struct {
	db     *sqlx.DB
	dbURL  string
	client *Client
	log    *slog.Logger
	opts   RelayOptions
}

// NewRelay returns a relay reading the outbox through d (connected to dbURL,
// which the listener uses for its own connection) and enqueueing with c.
func NewRelay(d *sqlx.DB, dbURL string, c *Client, log *slog.Logger, opts RelayOptions) *Relay {
	return &Relay{db: d, dbURL: dbURL, client: c, log: log.With("component", "outbox_relay"), opts: opts.withDefaults()}
}

// Run relays until ctx ends. It returns nil on cancellation.
func (r *Relay) Run(ctx context.Context) error {
	// Polling works while the listener is down; neither blocks start-up or
	// shutdown.
	notify := db.Listen(ctx, r.dbURL, store.OutboxChannel, func(err error) {
		r.log.Warn("outbox listener (polling meanwhile)", "err", err)
	})
	ticker := time.NewTicker(r.opts.Poll)
	defer ticker.Stop()
	for {
		r.drain(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-notify:
		case <-ticker.C:
		}
	}
}

// drain sends due batches until none is left or a batch had failures (then
// the next tick or notification tries again).
func (r *Relay) drain(ctx context.Context) {
	for ctx.Err() == nil {
		n, failed, err := r.RelayOnce(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Error("outbox relay", "err", err)
			}
			return
		}
		if n < r.opts.Batch || failed > 0 {
			return
		}
	}
}

// RelayOnce sends one batch of due rows and reports how many it handled and
// how many of those failed (and were rescheduled).
func (r *Relay) RelayOnce(ctx context.Context) (handled, failed int, err error) {
	err = db.InTx(ctx, r.db, func(tx *sqlx.Tx) error {
		ob := store.NewOutbox(tx)
		rows, err := ob.Due(ctx, r.opts.Batch)
		if err != nil {
			return err
		}
		for _, row := range rows {
			handled++
			sendErr := r.send(ctx, row)
			if sendErr == nil {
				if err := ob.MarkSent(ctx, row.ID); err != nil {
					return err
				}
				continue
			}
			failed++
			if errors.Is(sendErr, errUnsendable) {
				if row.Attempts+1 >= r.opts.DeadAttempts {
					r.log.Error("outbox row can never become a task: marked dead", "outbox_id", row.ID, "task_type", row.TaskType,
						"attempts", row.Attempts+1, "err", sendErr)
					if err := ob.MarkDead(ctx, row.ID, sendErr.Error()); err != nil {
						return err
					}
					continue
				}
				// Not Redis's fault: the rest of the batch may go out.
				backoff := tasks.BackoffCeiling(row.Attempts, r.opts.RetryBase, r.opts.RetryCap)
				r.log.Warn("outbox row cannot become a task; will retry before giving up", "outbox_id", row.ID, "task_type", row.TaskType,
					"attempts", row.Attempts+1, "dead_after_attempts", r.opts.DeadAttempts, "retry_in", backoff, "err", sendErr)
				if err := ob.MarkFailed(ctx, row.ID, sendErr.Error(), backoff); err != nil {
					return err
				}
				continue
			}
			backoff := tasks.BackoffCeiling(row.Attempts, r.opts.RetryBase, r.opts.RetryCap)
			r.log.Warn("outbox row not enqueued; will retry", "outbox_id", row.ID, "task_type", row.TaskType,
				"attempts", row.Attempts+1, "retry_in", backoff, "err", sendErr)
			if err := ob.MarkFailed(ctx, row.ID, sendErr.Error(), backoff); err != nil {
				return err
			}
			// Most failures are Redis being unreachable: stop here rather
			// than wait for every row of the batch to fail too. The rest stay
			// due and go first on the next tick.
			break
		}
		return nil
	})
	return handled, failed, err
}

// errUnsendable marks a row that no relay of this version can turn into a
// task, as opposed to a failure to reach Redis.
var errUnsendable = errors.New("cannot become a task")

// send enqueues row as a task whose ID is the row's, forwarding the stored
// payload bytes. A task already holding that ID means an earlier attempt
// got it out: that is success.
func (r *Relay) send(ctx context.Context, row store.OutboxEntry) error {
	typ, ok := r.client.reg.Lookup(row.TaskType)
	if !ok {
		return fmt.Errorf("%w: %w %q", errUnsendable, tasks.ErrUnknownType, row.TaskType)
	}
	// Checked leniently, as the worker will (the row may predate a field's
	// removal), but not re-encoded: the stored bytes go out as they are.
	if _, err := r.client.reg.DecodeStored(row.TaskType, row.Payload); err != nil {
		return fmt.Errorf("%w: payload: %w", errUnsendable, err)
	}
	opts, headers, err := rowOptions(row.Options) // outbox_options.go
	if err != nil {
		return fmt.Errorf("%w: %w", errUnsendable, err)
	}
	if row.RequestID != "" {
		if headers == nil {
			headers = map[string]string{}
		}
		headers[tasks.HeaderRequestID] = row.RequestID
	}
	t := typ.TaskFromStored(row.Payload, headers, append([]asynq.Option{asynq.TaskID(row.ID),
		asynq.Retention(r.client.Retention(row.TaskType, r.opts.MinRetention))}, opts...)...)
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := r.client.EnqueueTask(ectx, t)
	switch {
	case errors.Is(err, ErrConflict):
		r.log.Info("outbox row was already enqueued", "outbox_id", row.ID, "task_type", row.TaskType)
		return nil
	case err != nil:
		return err
	}
	r.log.Debug("outbox row enqueued", "outbox_id", row.ID, "task_id", info.ID, "task_type", info.Type, "queue", info.Queue)
	return nil
}
