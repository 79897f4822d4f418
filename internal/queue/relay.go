package queue

import (
	"context"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/store"
)

// RelayOptions tune a Relay; zero values take the defaults.
type RelayOptions struct {
	Poll      time.Duration // polling interval; default 1 s
	Batch     int           // rows per transaction; default 100
	RetryBase time.Duration // first backoff of a failing row; default 1 s
	RetryCap  time.Duration // longest backoff; default 1 min
	// DeadAttempts is how many times a row that cannot become a task
	// (unknown type, invalid payload) is tried before it is marked dead;
	// default 8 (about 3 minutes with the default backoff), so a relay of
	// an older version during a rolling deploy leaves a newer type to a
	// newer relay rather than killing it.
	DeadAttempts int
	// Grace is how long a row must have been due before this relay takes
	// it (0: at once). A producer's dispatcher sends its rows right after
	// its commit; a relay polling meanwhile would race it for them (half
	// of a 10,000-step group's rows on the bench, each taken at about
	// twice the dispatcher's cost). With a grace the relay takes only what
	// no dispatcher sent: a crashed producer's rows, rows that failed, rows
	// of a producer without a dispatcher. They go out up to Grace later.
	Grace time.Duration
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
	if o.DeadAttempts <= 0 {
		o.DeadAttempts = 8
	}
	return o
}

// Relay moves committed outbox rows into asynq: the backstop of the
// transactional outbox. Producers hand their rows to a Dispatcher right
// after commit; the relay polls for every row no dispatcher sent — the
// producer crashed between commit and dispatch, Redis was down, the
// dispatcher's buffer was full, or the producer has no dispatcher (the
// `api createuser` command, a workflow advanced by a process without one).
// Each row is enqueued with asynq.TaskID(row id) and marked sent in the
// transaction that locked it (SELECT … FOR UPDATE SKIP LOCKED), so:
//
//   - relays (api replicas) and dispatchers never send the same row
//     concurrently;
//   - a crash after enqueueing but before the commit re-enqueues the row,
//     which asynq refuses as a duplicate task ID: treated as sent;
//   - a failing row (Redis down) is retried with exponential backoff and
//     counted in outbox_pending until it goes out;
//   - a row that can never become a task (its type unknown to this
//     version, its payload no longer valid) is marked dead with its reason
//     after DeadAttempts tries, leaving outbox_pending for outbox_dead,
//     until an operator requeues it (`api outbox requeue`).
//
// A batch's rows are enqueued concurrently and marked sent in one
// statement, committed asynchronously (see outboxSender.sendLocked).
type Relay struct {
	db     *sqlx.DB
	sender *outboxSender
	opts   RelayOptions
}

// NewRelay returns a relay reading the outbox through d and enqueueing with
// c.
func NewRelay(d *sqlx.DB, c *Client, log *slog.Logger, opts RelayOptions) *Relay {
	opts = opts.withDefaults()
	return &Relay{db: d, opts: opts,
		sender: &outboxSender{client: c, log: log.With("component", "outbox_relay"), opts: opts}}
}

// Run relays until ctx ends, every Poll. It returns nil on cancellation.
func (r *Relay) Run(ctx context.Context) error {
	ticker := time.NewTicker(r.opts.Poll)
	defer ticker.Stop()
	for {
		r.drain(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// drain sends due batches until none is left or a batch had failures (then
// the next tick tries again).
func (r *Relay) drain(ctx context.Context) {
	for ctx.Err() == nil {
		n, failed, err := r.RelayOnce(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.sender.log.Error("outbox relay", "err", err)
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
		rows, err := store.NewOutbox(tx).TakeDue(ctx, r.opts.Batch, r.opts.Grace)
		if err != nil {
			return err
		}
		handled = len(rows)
		failed, err = r.sender.sendLocked(ctx, tx, rows)
		return err
	})
	return handled, failed, err
}
