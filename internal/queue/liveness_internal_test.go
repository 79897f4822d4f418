package queue

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

type livenessBundle struct {
	rdb   *redis.Client
	url   string
	insp  *asynq.Inspector
	queue string
	l     *Liveness // the reaper under test
}

func setupLiveness(t *testing.T) *livenessBundle {
	t.Helper()
	url, rdb := testenv.Redis(t)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	return &livenessBundle{rdb: rdb, url: url, insp: insp, queue: "q" + strings.ToLower(t.Name()[4:12]),
		l: NewLiveness(rdb, testenv.Logger(t), nil, LivenessOptions{})}
}

// deadWorkerHolding makes the state a worker leaves when it is killed while
// running task id: the task is active (dequeued as asynq's dequeue script
// does), asynq last extended its lease leaseAge ago, and the worker's
// heartbeat, which names the task, is silentFor old.
func (b *livenessBundle) deadWorkerHolding(t *testing.T, worker, id string, maxRetry int, silentFor, leaseAge time.Duration) {
	t.Helper()
	ctx := context.Background()
	c := asynq.NewClientFromRedisClient(b.rdb)
	if _, err := c.Enqueue(asynq.NewTask("test:work", []byte(`{}`)), asynq.TaskID(id), asynq.Queue(b.queue), asynq.MaxRetry(maxRetry)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p := "asynq:{" + b.queue + "}:"
	if err := b.rdb.LRem(ctx, p+"pending", 0, id).Err(); err != nil {
		t.Fatal(err)
	}
	b.rdb.LPush(ctx, p+"active", id)
	b.rdb.HSet(ctx, p+"t:"+id, "state", "active")
	b.rdb.HDel(ctx, p+"t:"+id, "pending_since")
	b.rdb.ZAdd(ctx, p+"lease", redis.Z{Score: float64(now.Add(asynqLease - leaseAge).Unix()), Member: id})
	b.rdb.ZAdd(ctx, beatsKey, redis.Z{Score: float64(now.Add(-silentFor).UnixMilli()), Member: worker})
	b.rdb.HSet(ctx, heldKey(worker), id, b.queue)
}

func (b *livenessBundle) task(t *testing.T, id string) *asynq.TaskInfo {
	t.Helper()
	info, err := b.insp.GetTaskInfo(b.queue, id)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	return info
}

func TestReaperRequeuesDeadWorkersTaskAsAFailedAttempt(t *testing.T) {
	t.Parallel()
	b := setupLiveness(t)
	ctx := context.Background()
	b.deadWorkerHolding(t, "dead-1", "t1", 3, 11*time.Second, 11*time.Second)

	if err := b.l.reap(ctx); err != nil {
		t.Fatal(err)
	}
	info := b.task(t, "t1")
	if info.State != asynq.TaskStatePending || info.Retried != 1 || info.MaxRetry != 3 ||
		!strings.Contains(info.LastErr, "worker dead-1 died") || info.LastFailedAt.IsZero() || string(info.Payload) != `{}` {
		t.Fatalf("recovered task = state %s retried %d/%d last_err %q payload %s", info.State, info.Retried, info.MaxRetry, info.LastErr, info.Payload)
	}
	// Gone from active and lease; at the head of pending; counted as failed.
	p := "asynq:{" + b.queue + "}:"
	if n := b.rdb.LLen(ctx, p+"active").Val() + b.rdb.ZCard(ctx, p+"lease").Val(); n != 0 {
		t.Errorf("active+lease = %d after recovery", n)
	}
	qi, err := b.insp.GetQueueInfo(b.queue)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Pending != 1 || qi.Active != 0 || qi.Failed != 1 || qi.Processed != 1 {
		t.Errorf("queue info = pending %d active %d failed %d processed %d", qi.Pending, qi.Active, qi.Failed, qi.Processed)
	}
	// The dead worker is forgotten; its wake-up would learn what was taken.
	if s := b.rdb.ZScore(ctx, beatsKey, "dead-1"); s.Err() != redis.Nil {
		t.Errorf("dead worker still in beats: %v", s)
	}
	if got := b.rdb.SMembers(ctx, reapedKey("dead-1")).Val(); len(got) != 1 || got[0] != "t1" {
		t.Errorf("reaped set = %v", got)
	}
	// A second reaper finds nothing to do.
	if err := b.l.reap(ctx); err != nil {
		t.Fatal(err)
	}
	if info := b.task(t, "t1"); info.Retried != 1 {
		t.Errorf("second reap changed the task: retried %d", info.Retried)
	}
}

func TestReaperArchivesTaskWhoseRetriesAreSpent(t *testing.T) {
	t.Parallel()
	b := setupLiveness(t)
	b.deadWorkerHolding(t, "dead-2", "t2", 0, 11*time.Second, 11*time.Second)
	if err := b.l.reap(context.Background()); err != nil {
		t.Fatal(err)
	}
	if info := b.task(t, "t2"); info.State != asynq.TaskStateArchived || info.Retried != 0 || !strings.Contains(info.LastErr, "died") {
		t.Fatalf("task = state %s retried %d last_err %q, want archived", info.State, info.Retried, info.LastErr)
	}
}

// A worker that is slow, not dead, keeps its tasks: a recent heartbeat
// (a 5 s stall) or a lease that asynq extended recently each suffice.
func TestReaperLeavesLiveWorkersTasks(t *testing.T) {
	t.Parallel()
	b := setupLiveness(t)
	b.deadWorkerHolding(t, "stalled", "t3", 3, 5*time.Second, 5*time.Second)
	b.deadWorkerHolding(t, "asynq-alive", "t4", 3, 20*time.Second, 2*time.Second)
	if err := b.l.reap(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"t3", "t4"} {
		if info := b.task(t, id); info.State != asynq.TaskStateActive || info.Retried != 0 {
			t.Errorf("%s = %s retried %d, want still active", id, info.State, info.Retried)
		}
	}
	if n := b.rdb.HLen(context.Background(), heldKey("asynq-alive")).Val(); n != 1 {
		t.Errorf("claim of a task whose lease is live was dropped early")
	}
}

// Right after this process saw Redis fail, every heartbeat may be stale
// because of the outage, not because workers died: no reaping.
func TestReaperWaitsAfterRedisErrors(t *testing.T) {
	t.Parallel()
	b := setupLiveness(t)
	b.deadWorkerHolding(t, "dead-3", "t5", 3, 30*time.Second, 30*time.Second)
	b.l.lastErr = time.Now()
	if err := b.l.reap(context.Background()); err != nil {
		t.Fatal(err)
	}
	if info := b.task(t, "t5"); info.State != asynq.TaskStateActive {
		t.Fatalf("task = %s right after a Redis error, want active", info.State)
	}
	b.l.lastErr = time.Now().Add(-time.Minute)
	if err := b.l.reap(context.Background()); err != nil {
		t.Fatal(err)
	}
	if info := b.task(t, "t5"); info.State != asynq.TaskStatePending {
		t.Fatalf("task = %s once Redis was healthy for long, want pending", info.State)
	}
}

// asynq's own recoverer and Conveyor's reaper race for a task whose lease
// expired long ago: the reaper leaves it to asynq's recoverer (which could
// otherwise move it again after the reaper had moved it and a worker had
// taken it), so it is recovered once (retried 1) and runs once.
func TestReaperAndAsynqRecovererRecoverOnce(t *testing.T) {
	t.Parallel()
	b := setupLiveness(t)
	b.deadWorkerHolding(t, "dead-4", "t6", 3, 90*time.Second, 90*time.Second)

	var runs atomic.Int32
	srv := asynq.NewServerFromRedisClient(b.rdb, asynq.Config{
		Queues:         map[string]int{b.queue: 1},
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return 0 },
		LogLevel:       asynq.FatalLevel,
		// Its recoverer runs once at start, like the reaper below.
		DelayedTaskCheckInterval: 100 * time.Millisecond,
	})
	done := make(chan error, 1)
	go func() { done <- b.l.reap(context.Background()) }()
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		runs.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return runs.Load() >= 1 }, "the task never ran again")
	time.Sleep(2 * time.Second) // a second run would have happened by now
	if n := runs.Load(); n != 1 {
		t.Fatalf("task ran %d times after recovery, want 1", n)
	}
	// Completed tasks without retention are deleted: check the counters.
	qi, err := b.insp.GetQueueInfo(b.queue)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Failed != 1 {
		t.Errorf("recovery counted %d failures, want 1 (recovered once)", qi.Failed)
	}
}

// A worker that wakes after being presumed dead learns which tasks were
// recovered and cancels their handlers; its other tasks run on.
func TestWokenWorkerCancelsRecoveredTasks(t *testing.T) {
	t.Parallel()
	b := setupLiveness(t)
	ctx := context.Background()
	l := NewLiveness(b.rdb, testenv.Logger(t), nil, LivenessOptions{})
	if err := l.beat(ctx); err != nil {
		t.Fatal(err)
	}
	h := l.Middleware(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		<-ctx.Done()
		return context.Cause(ctx)
	}))
	results := map[string]chan error{}
	for _, id := range []string{"taken", "kept"} {
		res := make(chan error, 1)
		results[id] = res
		tctx := asynqContext(t, id, b.queue)
		go func() { res <- h.ProcessTask(tctx, asynq.NewTask("test:work", nil)) }()
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return b.rdb.HLen(ctx, heldKey(l.ID())).Val() == 2 },
		"the middleware did not record both tasks in the heartbeat")

	b.rdb.SAdd(ctx, reapedKey(l.ID()), "taken")
	if err := l.beat(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-results["taken"]:
		if !errors.Is(err, errRecovered) {
			t.Fatalf("recovered task's handler ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("recovered task's handler was not cancelled")
	}
	select {
	case err := <-results["kept"]:
		t.Fatalf("other task's handler ended: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := l.beat(ctx); err != nil { // drops the finished claim
		t.Fatal(err)
	}
	if got := b.rdb.HKeys(ctx, heldKey(l.ID())).Val(); len(got) != 1 || got[0] != "kept" {
		t.Fatalf("claims after the beat = %v, want [kept]", got)
	}
}

// asynqContext is the context asynq gives a handler, made through a real
// server so that GetTaskID and GetQueueName work.
func asynqContext(t *testing.T, id, queue string) context.Context {
	t.Helper()
	_, rdb := testenv.Redis(t)
	ch := make(chan context.Context, 1)
	release := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{queue: 1}, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		ch <- ctx
		<-release
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(release); srv.Shutdown() })
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("test:work", nil), asynq.TaskID(id), asynq.Queue(queue)); err != nil {
		t.Fatal(err)
	}
	return <-ch
}

// A task is named in the heartbeat only if it outlives claimDelay: a short
// one never costs a Redis write, a long one is claimed while it runs and
// its claim is dropped by the heartbeat after it ends.
func TestClaimsOnlyTasksThatOutliveClaimDelay(t *testing.T) {
	t.Parallel()
	b := setupLiveness(t)
	ctx := context.Background()
	l := NewLiveness(b.rdb, testenv.Logger(t), nil, LivenessOptions{})
	if err := l.beat(ctx); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	h := l.Middleware(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		if string(task.Payload()) == "long" {
			<-release
		}
		return nil
	}))
	// Holding claimMu keeps the claim writer out while the quick task runs,
	// however slow the machine: it is over before any write could name it.
	qctx := asynqContext(t, "quick", b.queue)
	l.claimMu.Lock()
	err := h.ProcessTask(qctx, asynq.NewTask("test:work", []byte("quick")))
	l.claimMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lctx := asynqContext(t, "long", b.queue)
	go func() { done <- h.ProcessTask(lctx, asynq.NewTask("test:work", []byte("long"))) }()
	testenv.Eventually(t, 5*time.Second, func() bool { return b.rdb.HExists(ctx, heldKey(l.ID()), "long").Val() },
		"the long task was never named in the heartbeat")
	if b.rdb.HExists(ctx, heldKey(l.ID()), "quick").Val() {
		t.Error("the quick task, over before claimDelay, was written to the heartbeat")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := l.beat(ctx); err != nil {
		t.Fatal(err)
	}
	if n := b.rdb.HLen(ctx, heldKey(l.ID())).Val(); n != 0 {
		t.Errorf("%d claims left after both tasks ended and a heartbeat", n)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.finished) != 0 {
		t.Errorf("claims still to drop: %v", l.finished)
	}
}
