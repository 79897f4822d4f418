package queue_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/service"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// runDispatcher runs disp until the test ends.
func runDispatcher(t *testing.T, disp *queue.Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- disp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Dispatcher.Run: %v", err)
		}
	})
}

// waitSent waits until outbox row id is marked sent.
func waitSent(t *testing.T, d *sqlx.DB, id string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() bool {
		row, err := store.NewOutbox(d).Get(context.Background(), id)
		return err == nil && row.SentAt != nil
	}, "outbox row %s was not dispatched", id)
}

// The dispatcher sends what has committed, and only that: a row whose ID
// arrives before its transaction commits is invisible to it (the relay
// sends it later), and the IDs of a rolled-back transaction send nothing.
// Batches are handled in order, so once a marker row dispatched after an ID
// is sent, that ID has been dealt with.
func TestDispatcherSendsOnlyCommittedRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	disp := queue.NewDispatcher(b.db, b.client, testenv.Logger(t))
	runDispatcher(t, disp)

	committed := addWelcome(t, b.db, 1)
	disp.Dispatch(committed)
	waitSent(t, b.db, committed)
	if _, err := b.client.GetTask(ctx, committed, ""); err != nil {
		t.Fatalf("dispatched row %s is not a task: %v", committed, err)
	}

	// Dispatched before its commit.
	early, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	earlyID, err := service.AddTask(ctx, early, tasks.EmailWelcomePayload{UserID: 2}, "")
	if err != nil {
		t.Fatal(err)
	}
	// Dispatched, then rolled back.
	rolledBack, err := b.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	rolledBackID, err := service.AddTask(ctx, rolledBack, tasks.EmailWelcomePayload{UserID: 3}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := rolledBack.Rollback(); err != nil {
		t.Fatal(err)
	}
	marker := addWelcome(t, b.db, 4)
	disp.Dispatch(earlyID, rolledBackID, marker)
	waitSent(t, b.db, marker)
	for _, id := range []string{earlyID, rolledBackID} {
		if _, err := b.client.GetTask(ctx, id, ""); err == nil {
			t.Fatalf("row %s of an uncommitted transaction became a task", id)
		}
	}

	if err := early.Commit(); err != nil {
		t.Fatal(err)
	}
	row, err := store.NewOutbox(b.db).Get(ctx, earlyID)
	if err != nil || row.SentAt != nil || row.Attempts != 0 {
		t.Fatalf("row dispatched before its commit = %+v, %v; want unsent, untried", row, err)
	}
	if n, failed, err := b.relay.RelayOnce(ctx); n != 1 || failed != 0 || err != nil {
		t.Fatalf("relay after the commit = %d, %d, %v; want the early row", n, failed, err)
	}
	if _, err := b.client.GetTask(ctx, earlyID, ""); err != nil {
		t.Fatalf("early row not relayed: %v", err)
	}
}

// sendCounts counts, per outbox row, the dispatcher's and relays' log
// records of a successful enqueue and of an enqueue refused as a duplicate.
type sendCounts struct {
	mu         sync.Mutex
	sent, dups map[string]int
}

type countingHandler struct {
	slog.Handler
	c *sendCounts
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	var id string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "outbox_id" {
			id = a.Value.String()
		}
		return true
	})
	h.c.mu.Lock()
	switch r.Message {
	case "outbox row enqueued":
		h.c.sent[id]++
	case "outbox row was already enqueued":
		h.c.dups[id]++
	}
	h.c.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{h.Handler.WithAttrs(as), h.c}
}
func (h countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{h.Handler.WithGroup(name), h.c}
}

// Two relays polling as fast as they can and a dispatcher race over the
// rows of 200 orders placed concurrently: every order's outbox row becomes
// exactly one task, enqueued once (no duplicate was even attempted), and
// none is left unsent.
func TestDispatcherAndRelaysRaceExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	sends := &sendCounts{sent: map[string]int{}, dups: map[string]int{}}
	log := slog.New(countingHandler{slog.DiscardHandler, sends})
	disp := queue.NewDispatcher(b.db, b.client, log, queue.DispatcherOptions{Batch: 16})
	runDispatcher(t, disp)
	rctx, stopRelays := context.WithCancel(ctx)
	var relays sync.WaitGroup
	for range 2 {
		r := queue.NewRelay(b.db, b.client, log, queue.RelayOptions{Poll: time.Millisecond, Batch: 8})
		relays.Go(func() { _ = r.Run(rctx) })
	}
	defer func() { stopRelays(); relays.Wait() }()

	u := store.User{Email: "race@example.com", Name: "Race"}
	if err := store.NewUsers(b.db).Create(ctx, &u); err != nil {
		t.Fatal(err)
	}
	const orders = 200
	// Half the orders as POST /api/v1/orders places them without an
	// Idempotency-Key (one prepared statement, no transaction, IDs from a
	// block), half inside a transaction.
	prepared := store.NewPrepared(b.db)
	t.Cleanup(func() { _ = prepared.Close() })
	orderIDs := service.NewOrderIDs(b.db, 10)
	var wg sync.WaitGroup
	errs := make(chan error, orders)
	for i := range orders {
		wg.Go(func() {
			in := service.NewOrder{UserID: u.ID, Currency: "EUR",
				Items: []store.OrderItem{{SKU: fmt.Sprint("sku-", i), Quantity: 1, UnitPriceCents: 100}}}
			var created service.CreatedOrder
			var err error
			if i%2 == 0 {
				in.IDs = orderIDs
				created, err = service.CreateOrder(ctx, prepared, in)
			} else {
				err = db.InTx(ctx, b.db, func(tx *sqlx.Tx) (err error) {
					created, err = service.CreateOrder(ctx, tx, in)
					return err
				})
			}
			if err != nil {
				errs <- err
				return
			}
			disp.Dispatch(created.Outbox...)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	var ids []string
	if err := b.db.SelectContext(ctx, &ids, `SELECT id FROM outbox`); err != nil {
		t.Fatal(err)
	}
	if len(ids) != orders {
		t.Fatalf("%d outbox rows, want one per order (%d)", len(ids), orders)
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		st, err := store.NewOutbox(b.db).Stats(ctx)
		return err == nil && st.Pending == 0
	}, "outbox rows left unsent")
	stopRelays()
	relays.Wait()

	var tasksInRedis int
	qs, err := b.client.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		tasksInRedis += q.Size
	}
	if tasksInRedis != orders {
		t.Errorf("%d tasks in Redis, want %d", tasksInRedis, orders)
	}
	sends.mu.Lock()
	defer sends.mu.Unlock()
	for _, id := range ids {
		if _, err := b.client.GetTask(ctx, id, ""); err != nil {
			t.Errorf("row %s is not a task: %v", id, err)
		}
		if sends.sent[id] != 1 || sends.dups[id] != 0 {
			t.Errorf("row %s enqueued %d times, refused as a duplicate %d times; want once, never", id, sends.sent[id], sends.dups[id])
		}
	}
}

// With Redis down the dispatcher records the failure as the relay would
// (attempt counted, backoff) and the row stays in the outbox; once Redis is
// back the relay sends it.
func TestDispatcherLeavesRowsToTheRelayWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	down := setupRelay(t, "redis://"+testenv.FreeAddr(t)+"/0", queue.RelayOptions{})
	disp := queue.NewDispatcher(down.db, down.client, testenv.Logger(t),
		queue.DispatcherOptions{Relay: queue.RelayOptions{RetryBase: time.Hour, RetryCap: 2 * time.Hour}})
	runDispatcher(t, disp)
	id := addWelcome(t, down.db, 21)
	disp.Dispatch(id)

	ob := store.NewOutbox(down.db)
	testenv.Eventually(t, 20*time.Second, func() bool {
		row, err := ob.Get(ctx, id)
		return err == nil && row.Attempts == 1
	}, "the dispatcher's failure was not recorded")
	row, _ := ob.Get(ctx, id)
	if row.SentAt != nil || row.LastError == "" || !row.NextAttemptAt.After(time.Now().Add(30*time.Minute)) {
		t.Fatalf("row after the dispatcher's failure = %+v", row)
	}

	relayAfterRecovery(t, down.db, id, row.LastError)
}

// Dispatch never blocks: IDs beyond the buffer are dropped and counted (the
// relay sends their rows), and a nil dispatcher does nothing.
func TestDispatchDropsWhatDoesNotFit(t *testing.T) {
	t.Parallel()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	reg := prometheus.NewRegistry()
	m := observe.NewDispatchMetrics(reg)
	disp := queue.NewDispatcher(b.db, b.client, testenv.Logger(t), queue.DispatcherOptions{Buffer: 2, Metrics: m})
	ids := []string{addWelcome(t, b.db, 31), addWelcome(t, b.db, 32), addWelcome(t, b.db, 33)}
	disp.Dispatch(ids...) // not running: the third does not fit
	if got := counter(t, reg, "conveyor_outbox_dispatch_dropped_total"); got != 1 {
		t.Fatalf("dropped = %v, want 1", got)
	}
	runDispatcher(t, disp)
	waitSent(t, b.db, ids[1])
	if row, _ := store.NewOutbox(b.db).Get(context.Background(), ids[2]); row.SentAt != nil {
		t.Fatal("a dropped ID was sent by the dispatcher")
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return counter(t, reg, "conveyor_outbox_dispatched_total") == 2 },
		"conveyor_outbox_dispatched_total is not 2")

	var none *queue.Dispatcher
	none.Dispatch(ids...)
}

// counter reads the counter name from reg (0 if absent).
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// The dispatcher's statements are prepared once per connection; a
// migration that adds a column to the outbox during a rolling deploy must
// not make its claim fail (a prepared SELECT * would: "cached plan must not
// change result type"), or every batch would be left to the relay.
func TestDispatcherKeepsSendingAfterOutboxGainsAColumn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	// Two connections (a statement is prepared on one and, inside the
	// transaction, on the transaction's): the second batch runs on a
	// connection where the first prepared its statements.
	b.db.SetMaxOpenConns(2)
	disp := queue.NewDispatcher(b.db, b.client, testenv.Logger(t))
	runDispatcher(t, disp)

	first := addWelcome(t, b.db, 1)
	disp.Dispatch(first)
	waitSent(t, b.db, first)

	if _, err := b.db.ExecContext(ctx, `ALTER TABLE outbox ADD COLUMN added_later text`); err != nil {
		t.Fatal(err)
	}
	second := addWelcome(t, b.db, 2)
	disp.Dispatch(second)
	// Read by hand: store's own SELECT * does not know the new column.
	var sent bool
	var attempts int
	testenv.Eventually(t, 20*time.Second, func() bool {
		err := b.db.QueryRowContext(ctx, `SELECT sent_at IS NOT NULL, attempts FROM outbox WHERE id = $1`, second).
			Scan(&sent, &attempts)
		return err == nil && sent
	}, "outbox row %s was not dispatched after the outbox gained a column", second)
	if attempts != 0 {
		t.Fatalf("row after the migration was tried %d times; want sent by the dispatcher at once", attempts)
	}
}

// With Linger, a row dispatched soon after a batch waits for company: it is
// not sent until LingerBelow rows are waiting (the linger, an hour here,
// never runs out), then they go together. The first row, with the
// dispatcher idle, goes at once.
func TestDispatcherLingersWhenBusy(t *testing.T) {
	t.Parallel()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	disp := queue.NewDispatcher(b.db, b.client, testenv.Logger(t),
		queue.DispatcherOptions{Linger: time.Hour, LingerBelow: 2, Busy: time.Hour})
	runDispatcher(t, disp)

	first := addWelcome(t, b.db, 1)
	disp.Dispatch(first)
	waitSent(t, b.db, first)

	second := addWelcome(t, b.db, 2)
	disp.Dispatch(second)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if row, err := store.NewOutbox(b.db).Get(context.Background(), second); err == nil && row.SentAt != nil {
			t.Fatal("a row dispatched right after a batch went alone")
		}
	}
	third := addWelcome(t, b.db, 3)
	disp.Dispatch(third)
	waitSent(t, b.db, second)
	waitSent(t, b.db, third)
}
