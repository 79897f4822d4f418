package queue

import (
	"context"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/store"
)

// DispatcherOptions tune a Dispatcher; zero values take the defaults.
type DispatcherOptions struct {
	// Buffer is how many row IDs may wait to be sent; default 10,000.
	// Dispatch drops what does not fit (counted in Metrics): the relay's
	// poll sends those rows.
	Buffer int
	// Batch is the most rows one transaction claims; default 500.
	Batch int
	// Relay says how failures are recorded (RetryBase, RetryCap,
	// DeadAttempts): the same settings as the relay's, whose defaults
	// apply.
	Relay RelayOptions
	// Metrics counts sent and dropped rows (nil: not counted).
	Metrics *observe.DispatchMetrics
	// Linger is how long a batch of fewer than LingerBelow rows waits for
	// more when the previous batch ended less than Busy ago; 0 (the
	// default): never. A producer whose rows come one per request (the
	// api's orders) sets it: at a steady few hundred orders a second each
	// row would otherwise be a batch of its own, a claim, a sent mark and a
	// commit per row. A producer that hands over rows in batches (the
	// workflow Advancer) does not need it, and a chain's next step would
	// only wait longer.
	Linger      time.Duration
	LingerBelow int
	Busy        time.Duration
}

func (o DispatcherOptions) withDefaults() DispatcherOptions {
	if o.Buffer <= 0 {
		o.Buffer = 10_000
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	o.Relay = o.Relay.withDefaults()
	return o
}

// Dispatcher sends outbox rows as soon as their producer's transaction has
// committed, instead of waiting for the relay's poll: the producer calls
// Dispatch with the IDs of the rows it wrote, after the commit, and Run
// sends them in the background.
//
// Run groups whatever arrived while the previous batch was in flight and,
// in one transaction, claims those rows (still unsent, not locked by a
// relay: SELECT … FOR UPDATE SKIP LOCKED), enqueues them concurrently under
// their row ID as task ID, and marks them sent in one statement — the
// relay's own mechanism (outboxSender), so each row still becomes exactly
// one task. Dispatch never waits for Redis or PostgreSQL: when the buffer is
// full, the IDs are dropped and the relay sends those rows later. Anything
// the dispatcher cannot do — a crash between commit and Dispatch, Redis
// down, a row the relay holds — is the relay's, whose poll is the backstop.
//
// Its two statements (claim, mark sent) run prepared (store.Prepared): they
// run for every batch and cost PostgreSQL more to parse and plan than to
// run.
type Dispatcher struct {
	db       *sqlx.DB
	prepared *store.Prepared
	sender   *outboxSender
	opts     DispatcherOptions
	ids      chan string
}

// NewDispatcher returns a dispatcher that claims rows through d and
// enqueues them with c; only the first opts counts.
func NewDispatcher(d *sqlx.DB, c *Client, log *slog.Logger, opts ...DispatcherOptions) *Dispatcher {
	var o DispatcherOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	o = o.withDefaults()
	return &Dispatcher{db: d, prepared: store.NewPrepared(d), opts: o, ids: make(chan string, o.Buffer),
		sender: &outboxSender{client: c, log: log.With("component", "outbox_dispatcher"), opts: o.Relay}}
}

// Dispatch queues the IDs of outbox rows whose transaction has committed.
// It never blocks: IDs that do not fit in the buffer are dropped (the relay
// sends those rows). Calling it before the commit is harmless but useless —
// a row not yet visible is not found, and the relay sends it — and IDs of a
// rolled-back transaction send nothing. A nil *Dispatcher does nothing, so
// producers need not check whether their process has one. Safe for
// concurrent use.
func (d *Dispatcher) Dispatch(ids ...string) {
	if d == nil {
		return
	}
	for i, id := range ids {
		select {
		case d.ids <- id:
		default:
			d.opts.Metrics.Dropped(len(ids) - i)
			return
		}
	}
}

// Run sends dispatched rows until ctx ends; it returns nil then. IDs still
// buffered at that point are left to the relay. A batch in flight when ctx
// ends is finished (within a timeout), so its enqueued rows are marked.
func (d *Dispatcher) Run(ctx context.Context) error {
	batch := make([]string, 0, d.opts.Batch)
	var lastEnd time.Time
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return nil
		case id := <-d.ids:
			batch = appendID(batch, id)
		}
		batch = d.gather(batch)
		if d.opts.Linger > 0 && len(batch) < d.opts.LingerBelow && time.Since(lastEnd) < d.opts.Busy {
			batch = d.linger(ctx, batch)
		}
		if len(batch) > 0 {
			d.send(ctx, batch)
			lastEnd = time.Now()
		}
	}
}

// gather adds whatever arrived while the previous batch was in flight.
func (d *Dispatcher) gather(batch []string) []string {
	for len(batch) < d.opts.Batch {
		select {
		case id := <-d.ids:
			batch = appendID(batch, id)
		default:
			return batch
		}
	}
	return batch
}

// linger adds the IDs that arrive within the linger, or until the batch
// holds LingerBelow of them.
func (d *Dispatcher) linger(ctx context.Context, batch []string) []string {
	t := time.NewTimer(d.opts.Linger)
	defer t.Stop()
	for len(batch) < d.opts.LingerBelow {
		select {
		case id := <-d.ids:
			batch = appendID(batch, id)
		case <-t.C:
			return d.gather(batch)
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// appendID adds id to batch if it can name an outbox row: one malformed ID
// must not fail the claim of the whole batch.
func appendID(batch []string, id string) []string {
	if store.IsUUID(id) {
		return append(batch, id)
	}
	return batch
}

// send claims and sends the rows of ids in one transaction. On error the
// rows stay unsent and the relay sends them.
func (d *Dispatcher) send(ctx context.Context, ids []string) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var sent int
	err := db.InTx(bctx, d.db, func(tx *sqlx.Tx) error {
		q := d.prepared.InTx(tx)
		rows, err := store.NewOutbox(q).Take(bctx, ids)
		if err != nil {
			return err
		}
		failed, err := d.sender.sendLocked(bctx, q, rows)
		sent = len(rows) - failed
		return err
	})
	if err != nil {
		d.sender.log.Error("outbox dispatch (the relay will send these rows)", "rows", len(ids), "err", err)
		return
	}
	d.opts.Metrics.Sent(sent)
}
