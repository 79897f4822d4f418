package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

var allQueues = map[string]int{"critical": 6, "default": 3, "low": 1}

type relayBundle struct {
	db     *sqlx.DB
	client *queue.Client
	relay  *queue.Relay
}

func setupRelay(t *testing.T, redisURL string, opts queue.RelayOptions) *relayBundle {
	t.Helper()
	d, _ := testenv.DB(t)
	c, err := queue.NewClient(redisURL, tasks.All(), allQueues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &relayBundle{db: d, client: c, relay: queue.NewRelay(d, c, testenv.Logger(t), opts)}
}

func addWelcome(t *testing.T, d *sqlx.DB, userID int64) string {
	t.Helper()
	b, _ := json.Marshal(tasks.EmailWelcomePayload{UserID: userID})
	id, err := store.NewOutbox(d).Add(context.Background(), tasks.TypeEmailWelcome, b, "req-"+t.Name())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRelayEnqueuesWithOutboxIDAndMarksSent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	id := addWelcome(t, b.db, 7)

	n, failed, err := b.relay.RelayOnce(ctx)
	if err != nil || n != 1 || failed != 0 {
		t.Fatalf("RelayOnce = %d, %d, %v", n, failed, err)
	}
	info, err := b.client.GetTask(ctx, id, "")
	if err != nil {
		t.Fatalf("task %s not in Redis: %v", id, err)
	}
	// The stored bytes as PostgreSQL returns them (jsonb text), not re-encoded.
	if info.Type != tasks.TypeEmailWelcome || info.Queue != "critical" || string(info.Payload) != `{"user_id": 7}` {
		t.Fatalf("task = %+v", info)
	}
	row, _ := store.NewOutbox(b.db).Get(ctx, id)
	if row.SentAt == nil {
		t.Fatal("row not marked sent")
	}
	if n, _, _ := b.relay.RelayOnce(ctx); n != 0 {
		t.Fatalf("a sent row was relayed again (%d)", n)
	}
}

// A row written by an older version may carry a field this version dropped:
// it still goes out (the worker ignores unknown fields too), while a row
// that no longer validates stays pending, visible, with its reason.
func TestRelayDecodesStoredPayloadsLikeTheWorker(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	ob := store.NewOutbox(b.db)
	old, err := ob.Add(ctx, tasks.TypeEmailWelcome, json.RawMessage(`{"user_id":8,"locale":"fr"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if n, failed, err := b.relay.RelayOnce(ctx); err != nil || n != 1 || failed != 0 {
		t.Fatalf("RelayOnce = %d, %d, %v", n, failed, err)
	}
	if _, err := b.client.GetTask(ctx, old, ""); err != nil {
		t.Fatalf("row with an extra field not enqueued: %v", err)
	}
	bad, err := ob.Add(ctx, tasks.TypeEmailWelcome, json.RawMessage(`{"user_id":0}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if n, failed, _ := b.relay.RelayOnce(ctx); n != 1 || failed != 1 {
		t.Fatalf("invalid row: RelayOnce = %d handled, %d failed", n, failed)
	}
	row, _ := ob.Get(ctx, bad)
	if row.SentAt != nil || !strings.Contains(row.LastError, "user_id") {
		t.Fatalf("invalid row = %+v, want pending with the reason", row)
	}
}

// A batch's rows are taken (marked sent) before they are enqueued; the ones
// that fail are put back, unsent, while the others of the same transaction
// stay sent, each one task.
func TestRelayPutsBackOnlyTheRowsItCouldNotSend(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	ob := store.NewOutbox(b.db)
	good := addWelcome(t, b.db, 11)
	bad, err := ob.Add(ctx, tasks.TypeEmailWelcome, json.RawMessage(`{"user_id":0}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if n, failed, err := b.relay.RelayOnce(ctx); err != nil || n != 2 || failed != 1 {
		t.Fatalf("RelayOnce = %d, %d, %v; want 2 handled, 1 failed", n, failed, err)
	}
	if row, _ := ob.Get(ctx, good); row.SentAt == nil || row.Attempts != 0 {
		t.Fatalf("sent row = %+v", row)
	}
	if _, err := b.client.GetTask(ctx, good, ""); err != nil {
		t.Fatalf("sent row %s is not a task: %v", good, err)
	}
	if row, _ := ob.Get(ctx, bad); row.SentAt != nil || row.Attempts != 1 || row.LastError == "" {
		t.Fatalf("failed row = %+v, want unsent with one attempt and its reason", row)
	}
	if _, err := b.client.GetTask(ctx, bad, ""); err == nil {
		t.Fatalf("failed row %s became a task", bad)
	}
	if st, _ := ob.Stats(ctx); st.Pending != 1 || st.Retrying != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// A row that can never become a task — its type unknown to this version,
// its payload no longer valid — is tried DeadAttempts times, then marked
// dead with its reason: out of outbox_pending, into outbox_dead, never
// blocking the rows behind it. Requeueing brings it back.
func TestRelayMarksUnsendableRowsDead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{DeadAttempts: 2, RetryBase: time.Millisecond, RetryCap: time.Millisecond})
	ob := store.NewOutbox(b.db)
	unknown, err := ob.Add(ctx, "email:retired", json.RawMessage(`{"user_id":1}`), "")
	if err != nil {
		t.Fatal(err)
	}
	invalid, err := ob.Add(ctx, tasks.TypeEmailWelcome, json.RawMessage(`{"user_id":0}`), "")
	if err != nil {
		t.Fatal(err)
	}
	good := addWelcome(t, b.db, 12)

	if n, failed, err := b.relay.RelayOnce(ctx); err != nil || n != 3 || failed != 2 {
		t.Fatalf("first RelayOnce = %d, %d, %v; want 3 handled, 2 failed", n, failed, err)
	}
	if _, err := b.client.GetTask(ctx, good, ""); err != nil {
		t.Fatalf("a good row behind unsendable ones was not relayed: %v", err)
	}
	if st, _ := ob.Stats(ctx); st.Pending != 2 || st.Dead != 0 {
		t.Fatalf("stats after one attempt = %+v, want 2 pending", st)
	}
	time.Sleep(10 * time.Millisecond) // the backoff
	if n, failed, err := b.relay.RelayOnce(ctx); err != nil || n != 2 || failed != 2 {
		t.Fatalf("second RelayOnce = %d, %d, %v", n, failed, err)
	}
	if st, _ := ob.Stats(ctx); st.Pending != 0 || st.Dead != 2 {
		t.Fatalf("stats after DeadAttempts = %+v, want 0 pending and 2 dead", st)
	}
	dead, err := ob.Dead(ctx, 10)
	if err != nil || len(dead) != 2 {
		t.Fatalf("Dead = %v, %v", dead, err)
	}
	reasons := map[string]string{}
	for _, d := range dead {
		reasons[d.ID] = d.LastError
		if d.DeadAt == nil || d.Attempts != 2 {
			t.Errorf("dead row %+v", d)
		}
	}
	if !strings.Contains(reasons[unknown], "unknown task type") || !strings.Contains(reasons[invalid], "user_id") {
		t.Errorf("reasons = %v", reasons)
	}
	if n, _, _ := b.relay.RelayOnce(ctx); n != 0 {
		t.Fatalf("dead rows were tried again (%d)", n)
	}

	n, err := ob.RequeueDead(ctx, invalid)
	if err != nil || n != 1 {
		t.Fatalf("RequeueDead(one) = %d, %v", n, err)
	}
	if st, _ := ob.Stats(ctx); st.Pending != 1 || st.Dead != 1 {
		t.Fatalf("stats after requeueing one = %+v", st)
	}
	if n, _ := ob.RequeueDead(ctx, ""); n != 1 {
		t.Fatalf("RequeueDead(all) = %d, want the other one", n)
	}
}

// The relay forwards the stored payload bytes: a field this version does
// not know reaches the worker untouched (it may know it).
func TestRelayForwardsStoredPayloadBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	id, err := store.NewOutbox(b.db).Add(ctx, tasks.TypeEmailWelcome, json.RawMessage(`{"user_id":8,"locale":"fr"}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.relay.RelayOnce(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := b.client.GetTask(ctx, id, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(info.Payload); got != `{"locale": "fr", "user_id": 8}` {
		t.Fatalf("payload = %s, want the stored JSONB text", got)
	}
}

// A relay that enqueued a row and died before committing "sent" leaves the
// row due; the next relay's enqueue hits the task ID and counts it as sent,
// so there is still exactly one task.
func TestRelayTreatsTaskIDConflictAsSent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{})
	id := addWelcome(t, b.db, 8)

	task, err := tasks.New(tasks.EmailWelcomePayload{UserID: 8}, asynq.TaskID(id))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.EnqueueTask(ctx, task); err != nil { // the crashed relay's enqueue
		t.Fatal(err)
	}
	n, failed, err := b.relay.RelayOnce(ctx)
	if err != nil || n != 1 || failed != 0 {
		t.Fatalf("RelayOnce = %d, %d, %v", n, failed, err)
	}
	row, _ := store.NewOutbox(b.db).Get(ctx, id)
	if row.SentAt == nil {
		t.Fatal("conflicting row not marked sent")
	}
	stats, err := b.client.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range stats {
		if q.Queue == "critical" && q.Pending != 1 {
			t.Fatalf("critical queue holds %d tasks, want 1", q.Pending)
		}
	}
}

// With Redis unreachable the row stays unsent, counts in the stats, records
// its error and backs off; once Redis is back it goes out.
func TestRelayBacksOffWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	down := setupRelay(t, "redis://"+testenv.FreeAddr(t)+"/0", queue.RelayOptions{RetryBase: time.Hour, RetryCap: 2 * time.Hour})
	id := addWelcome(t, down.db, 9)

	n, failed, err := down.relay.RelayOnce(ctx)
	if err != nil || n != 1 || failed != 1 {
		t.Fatalf("RelayOnce with Redis down = %d, %d, %v", n, failed, err)
	}
	ob := store.NewOutbox(down.db)
	row, _ := ob.Get(ctx, id)
	if row.SentAt != nil || row.Attempts != 1 || row.LastError == "" || !row.NextAttemptAt.After(time.Now().Add(30*time.Minute)) {
		t.Fatalf("row after failure = %+v", row)
	}
	if st, _ := ob.Stats(ctx); st.Pending != 1 || st.Retrying != 1 {
		t.Fatalf("stats = %+v", st)
	}
	if n, _, _ := down.relay.RelayOnce(ctx); n != 0 {
		t.Fatal("a backing-off row was retried early")
	}

	// Redis is back (a relay with a working client on the same database),
	// and the backoff has passed.
	relayAfterRecovery(t, down.db, id, row.LastError)
}

// relayAfterRecovery: once Redis is back (a relay with a working client on
// d's database) and the backoff of row id has passed, one relay pass sends it.
func relayAfterRecovery(t *testing.T, d *sqlx.DB, id, lastErr string) {
	t.Helper()
	ctx := context.Background()
	redisURL, _ := testenv.Redis(t)
	up := newTestClient(t, redisURL)
	if err := store.NewOutbox(d).MarkFailed(ctx, id, lastErr, 0); err != nil { // due now
		t.Fatal(err)
	}
	relay := queue.NewRelay(d, up, testenv.Logger(t), queue.RelayOptions{})
	if n, failed, err := relay.RelayOnce(ctx); n != 1 || failed != 0 || err != nil {
		t.Fatalf("RelayOnce after recovery = %d, %d, %v", n, failed, err)
	}
	if _, err := up.GetTask(ctx, id, ""); err != nil {
		t.Fatalf("task not enqueued after recovery: %v", err)
	}
}

// newTestClient is a queue.Client on redisURL for every task type, closed
// when the test ends.
func newTestClient(t *testing.T, redisURL string) *queue.Client {
	t.Helper()
	c, err := queue.NewClient(redisURL, tasks.All(), allQueues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Run polls: a row no dispatcher sent goes out on a tick, and Run returns
// once its context ends.
func TestRelayRunPollsAndStops(t *testing.T) {
	t.Parallel()
	redisURL, _ := testenv.Redis(t)
	b := setupRelay(t, redisURL, queue.RelayOptions{Poll: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.relay.Run(ctx) }()

	id := addWelcome(t, b.db, 10) // after the first (empty) drain, most likely
	testenv.Eventually(t, 20*time.Second, func() bool {
		_, err := b.client.GetTask(context.Background(), id, "")
		return err == nil
	}, "outbox row %s was not relayed by polling", id)
	if _, err := b.client.GetTask(context.Background(), "nope", ""); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("GetTask(nope) = %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
