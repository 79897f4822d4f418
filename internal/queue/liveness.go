package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// Crash recovery in seconds.
//
// asynq gives a task to a worker with a 30 s lease that the worker's
// heartbeater extends every 5 s; when a worker dies, its tasks stay "active"
// until the lease has been expired for another 30 s and asynq's recoverer,
// which ticks once a minute, moves them to retry: 70–170 s, none of it
// configurable. Liveness shortens that to about DeadAfter:
//
//   - every worker writes a heartbeat into Redis every Interval (1 s) from
//     its own goroutine, independent of handlers, and names the tasks it is
//     running (see claimDelay: a task is named within 10 ms of its start,
//     and a task that is over by then never costs a Redis write);
//   - every worker also reaps: a worker whose heartbeat is older than
//     DeadAfter (10 s) is dead, and each task it held goes back to the head
//     of its queue — provided asynq, too, has stopped extending that task's
//     lease (leaseFence), so a task that a live worker holds is never taken.
//
// A recovered attempt counts as a failed attempt, exactly as with asynq's own
// recoverer: retried+1 and the error message say what happened, and a task
// whose retries are already spent is archived rather than run again (a task
// that kills its worker every time must not take the fleet down with it).
// The task goes to pending at once, with no retry delay: the worker died,
// not the task's dependency.
//
// Every step is a Lua script over asynq's own keys (active list, lease zset,
// task hash, pending list, archive, daily stats), so the dashboard and the
// inspector see an ordinary pending task; the scripts check the task is
// still active and unchanged, so several reapers running at once move it
// once at most. asynq's recoverer checks less: it lists the tasks whose
// lease expired asynqRecoverAge ago, then moves each one that is active
// then, even if meanwhile a reaper moved it and a live worker took it
// again (which would run it twice). So a reaper leaves a task whose lease
// expired that long ago (less a margin) to asynq's recoverer, and takes
// only those asynq cannot list yet: all of them when a live reaper finds
// the worker dead within seconds, as it normally does. The heartbeat keys share one hash
// tag, asynq's keys carry the queue's: every script stays in one slot of a
// Redis Cluster.
//
// A worker that was merely frozen for longer than DeadAfter (SIGSTOP, a
// partition from Redis) is treated as dead; when it wakes, its next
// heartbeat learns which of its tasks were recovered and cancels their
// handlers. Delivery stays at-least-once: handlers are idempotent.

const (
	livenessPrefix = "conveyor:{workers}:"
	beatsKey       = livenessPrefix + "beats" // zset: worker ID → last heartbeat, Redis clock, ms

	// asynqLease is asynq's fixed lease (rdb.LeaseDuration): each heartbeat
	// sets a task's lease to now + 30 s.
	asynqLease = 30 * time.Second
	// leaseFence: a task is taken from a dead worker only if asynq, too, has
	// not extended its lease for this long. asynq extends every 5 s, so a
	// live worker's leases are always younger.
	leaseFence = 7 * time.Second
	// asynqRecoverAge: asynq's recoverer takes a task once its lease has
	// been expired this long (recoverer.go's cutoff); a reaper leaves it
	// a task whose lease expired asynqRecoverAge - recoverMargin ago, the
	// margin covering the skew between Redis's clock and asynq's.
	asynqRecoverAge = 30 * time.Second
	recoverMargin   = 5 * time.Second
	// heldTTL bounds how long a crashed worker's bookkeeping stays in Redis
	// if no worker is left to reap it.
	heldTTL   = 24 * time.Hour
	reapedTTL = time.Hour
	statsTTL  = 90 * 24 * time.Hour // asynq's for processed/failed counters

	// DefaultDeadAfter is WORKER_DEAD_AFTER's default: twice a long stall.
	DefaultDeadAfter = 10 * time.Second
)

func heldKey(worker string) string   { return livenessPrefix + "held:" + worker }
func reapedKey(worker string) string { return livenessPrefix + "reaped:" + worker }

// errRecovered is the cause given to a handler whose task was recovered by
// another worker while this one missed its heartbeats.
var errRecovered = errors.New("task recovered by another worker: this worker missed its heartbeats")

// LivenessOptions tune Liveness; zero values take the defaults.
type LivenessOptions struct {
	Interval  time.Duration // heartbeat and reaper period; default 1 s
	DeadAfter time.Duration // a heartbeat this old means dead; default 10 s
}

func (o LivenessOptions) withDefaults() LivenessOptions {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.DeadAfter <= 0 {
		o.DeadAfter = DefaultDeadAfter
	}
	return o
}

// Liveness is one worker process's heartbeat and reaper; see the comment
// at the top of this file. Wrap the worker's handler with Middleware, call
// Start before the asynq server starts and Stop after it has shut down.
type Liveness struct {
	rdb  redis.UniversalClient
	id   string
	log  *slog.Logger
	opts LivenessOptions

	// claimMu orders claim writes (read lock) before and after a heartbeat
	// (write lock), so a heartbeat never removes a claim made while it runs.
	claimMu  sync.RWMutex
	mu       sync.Mutex
	running  map[string]runningTask
	finished []string // claims to drop at the next heartbeat
	claiming bool     // the claim writer (writeClaims) is running

	lastErr   time.Time // last Redis error seen by this process (zero: none)
	recovered *prometheus.CounterVec
	reaped    prometheus.Counter

	stop chan struct{}
	done chan struct{}
}

type runningTask struct {
	queue   string
	cancel  context.CancelCauseFunc
	claimed bool // written to the held hash (by writeClaims or a heartbeat)
}

// claimDelay is how often the running tasks not yet named in this worker's
// held hash are written there, all in one HSET. A task that ends sooner is
// never written: a drain of short tasks costs no Redis call per task for
// liveness. The price is a window: if the worker dies within claimDelay
// (plus one round trip) of starting a task, that task is not in its
// heartbeat and asynq's own recovery (70–170 s) brings it back instead of
// the reaper's ~10 s. Nothing is lost either way.
const claimDelay = 10 * time.Millisecond

// NewLiveness returns the liveness of this worker process, registering its
// metrics in reg (nil: none).
func NewLiveness(rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer, o LivenessOptions) *Liveness {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	l := &Liveness{
		rdb:     rdb,
		id:      fmt.Sprintf("%s:%d:%08x", host, os.Getpid(), rand.Uint32()),
		log:     log.With("component", "liveness"),
		opts:    o.withDefaults(),
		running: map[string]runningTask{},
		recovered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conveyor_worker_tasks_recovered_total",
			Help: "Tasks taken back from dead workers by this worker's reaper, by queue and outcome (pending: runs again; archived: its retries were spent).",
		}, []string{"queue", "outcome"}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conveyor_workers_reaped_total",
			Help: "Workers this worker's reaper found dead (no heartbeat for WORKER_DEAD_AFTER).",
		}),
	}
	if reg != nil {
		reg.MustRegister(l.recovered, l.reaped)
	}
	return l
}

// ID names this worker in the heartbeat keys: host:pid:random.
func (l *Liveness) ID() string { return l.id }

// Middleware names each task in this worker's heartbeat while its handler
// runs (within claimDelay of its start), and gives the handler a context
// that is cancelled if the task is recovered elsewhere while this worker
// looked dead.
func (l *Liveness) Middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		queue, _ := asynq.GetQueueName(ctx)
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)

		l.mu.Lock()
		l.running[id] = runningTask{queue: queue, cancel: cancel}
		start := !l.claiming
		l.claiming = true
		l.mu.Unlock()
		if start {
			go l.writeClaims()
		}
		defer func() {
			l.mu.Lock()
			if l.running[id].claimed {
				l.finished = append(l.finished, id)
			}
			delete(l.running, id)
			l.mu.Unlock()
		}()
		return next.ProcessTask(ctx, t)
	})
}

// writeClaims runs while this worker runs tasks: every claimDelay it
// writes the running tasks that are not in the held hash yet, in one HSET.
// It ends when no task runs; the next task to start starts it again.
func (l *Liveness) writeClaims() {
	t := time.NewTicker(claimDelay)
	defer t.Stop()
	for range t.C {
		// Under claimMu, so a heartbeat never runs in the middle of the write
		// (see beat): a claim of a task that ends meanwhile is dropped by the
		// next heartbeat, never left behind.
		l.claimMu.RLock()
		l.mu.Lock()
		if len(l.running) == 0 {
			l.claiming = false
			l.mu.Unlock()
			l.claimMu.RUnlock()
			return
		}
		var fields []any
		for id, r := range l.running {
			if !r.claimed {
				r.claimed = true
				l.running[id] = r
				fields = append(fields, id, r.queue)
			}
		}
		l.mu.Unlock()
		if len(fields) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := l.rdb.HSet(ctx, heldKey(l.id), fields...).Err(); err != nil {
				// The next heartbeat names them; until then a crash leaves
				// them to asynq's own recoverer.
				l.log.Warn("cannot record tasks in heartbeat", "tasks", len(fields)/2, "err", err)
			}
			cancel()
		}
		l.claimMu.RUnlock()
	}
}

// Start writes the first heartbeat (failing if Redis is unreachable) and
// starts the heartbeat and reaper goroutines.
func (l *Liveness) Start(ctx context.Context) error {
	if err := l.beat(ctx); err != nil {
		return fmt.Errorf("worker heartbeat: %w", err)
	}
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.loop(l.beat, "heartbeat") }()
	go func() { defer wg.Done(); l.loop(l.reap, "reaper") }()
	go func() { wg.Wait(); close(l.done) }()
	l.log.Info("heartbeat started", "worker_id", l.id, "interval", l.opts.Interval, "dead_after", l.opts.DeadAfter)
	return nil
}

// Stop ends both goroutines and removes this worker's heartbeat. Call it
// after the asynq server has shut down, so running tasks keep their claims
// for as long as they run.
func (l *Liveness) Stop(ctx context.Context) {
	if l.stop == nil {
		return
	}
	close(l.stop)
	<-l.done
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pipe := l.rdb.TxPipeline()
	pipe.ZRem(ctx, beatsKey, l.id)
	pipe.Del(ctx, heldKey(l.id))
	if _, err := pipe.Exec(ctx); err != nil {
		l.log.Warn("cannot remove heartbeat; other workers will reap it", "err", err)
	}
}

func (l *Liveness) loop(step func(context.Context) error, name string) {
	t := time.NewTicker(l.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.opts.Interval*3)
		err := step(ctx)
		cancel()
		if err != nil {
			l.mu.Lock()
			l.lastErr = time.Now()
			l.mu.Unlock()
			l.log.Warn(name+" failed", "err", err)
		}
	}
}

// beatScript records a heartbeat at Redis's clock, drops the claims of
// finished tasks, re-asserts the running ones, and returns (and forgets)
// the tasks that reapers recovered from this worker while it looked dead.
//
// KEYS[1] beats zset, KEYS[2] held hash, KEYS[3] reaped set
// ARGV[1] worker ID, ARGV[2] held TTL (s), ARGV[3] number of finished IDs,
// then the finished IDs, then (task ID, queue) pairs of running tasks.
var beatScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reaped = redis.call("SMEMBERS", KEYS[3])
if #reaped > 0 then
	redis.call("DEL", KEYS[3])
end
local n = tonumber(ARGV[3])
for i = 4, 3 + n do
	redis.call("HDEL", KEYS[2], ARGV[i])
end
for i = 4 + n, #ARGV - 1, 2 do
	redis.call("HSET", KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call("ZADD", KEYS[1], now, ARGV[1])
redis.call("EXPIRE", KEYS[2], ARGV[2])
return reaped`)

func (l *Liveness) beat(ctx context.Context) error {
	l.claimMu.Lock()
	defer l.claimMu.Unlock()
	l.mu.Lock()
	finished := len(l.finished)
	args := []any{l.id, int(heldTTL.Seconds()), 0}
	for _, id := range l.finished {
		if _, again := l.running[id]; !again { // a retry may run here again
			args = append(args, id)
		}
	}
	args[2] = len(args) - 3
	for id, r := range l.running {
		args = append(args, id, r.queue)
		if !r.claimed {
			r.claimed = true
			l.running[id] = r
		}
	}
	l.mu.Unlock()

	reaped, err := beatScript.Run(ctx, l.rdb, []string{beatsKey, heldKey(l.id), reapedKey(l.id)}, args...).StringSlice()
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.finished = l.finished[finished:]
	for _, id := range reaped {
		if r, ok := l.running[id]; ok {
			l.log.Warn("task was recovered by another worker while this one missed its heartbeats; cancelling it here",
				"task_id", id, "queue", r.queue)
			r.cancel(errRecovered)
		}
	}
	l.mu.Unlock()
	if len(reaped) > 0 {
		l.log.Warn("this worker was presumed dead and its tasks were recovered elsewhere", "worker_id", l.id, "tasks", len(reaped))
	}
	return nil
}

// deadScript lists workers whose heartbeat is older than ARGV[1] ms, with
// their last heartbeat, and Redis's clock (ms).
var deadScript = redis.NewScript(`
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now - tonumber(ARGV[1]), "WITHSCORES")}`)

// reap recovers the tasks of every dead worker.
func (l *Liveness) reap(ctx context.Context) error {
	res, err := deadScript.Run(ctx, l.rdb, []string{beatsKey}, l.opts.DeadAfter.Milliseconds()).Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return fmt.Errorf("dead workers: unexpected reply %v", res)
	}
	now, _ := res[0].(int64)
	dead, _ := res[1].([]any)
	if len(dead) == 0 {
		return nil
	}
	if ok, why := l.mayReap(ctx); !ok {
		l.log.Info("not reaping yet", "candidates", len(dead)/2, "reason", why)
		return nil
	}
	for i := 0; i+1 < len(dead); i += 2 {
		worker, _ := dead[i].(string)
		score, _ := dead[i+1].(string)
		last, err := strconv.ParseFloat(score, 64)
		if err != nil || worker == l.id {
			continue
		}
		if err := l.reapWorker(ctx, worker, score, time.Duration(now-int64(last))*time.Millisecond); err != nil {
			return fmt.Errorf("reap worker %s: %w", worker, err)
		}
	}
	return nil
}

// mayReap refuses while the heartbeats cannot be trusted: this process saw
// Redis fail less than DeadAfter ago, or Redis itself restarted less than
// DeadAfter ago. Either way live workers may not have written a heartbeat
// since, and a reaper that believed the old ones would take their tasks.
func (l *Liveness) mayReap(ctx context.Context) (bool, string) {
	l.mu.Lock()
	lastErr := l.lastErr
	l.mu.Unlock()
	if !lastErr.IsZero() && time.Since(lastErr) < l.opts.DeadAfter {
		return false, "redis failed recently"
	}
	info, err := l.rdb.Info(ctx, "server").Result()
	if err != nil {
		return false, "redis info: " + err.Error()
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "uptime_in_seconds:"); ok {
			if up, err := strconv.Atoi(v); err == nil && time.Duration(up)*time.Second < l.opts.DeadAfter {
				return false, "redis restarted recently"
			}
		}
	}
	return true, ""
}

// finishReapScript drops the claims a reaper settled, remembers the
// recovered ones for the worker's wake-up, and removes the worker if it
// has not beaten since it was found dead and holds nothing more.
//
// KEYS[1] beats, KEYS[2] held, KEYS[3] reaped
// ARGV[1] worker ID, ARGV[2] its heartbeat when found dead, ARGV[3]
// reaped TTL (s), ARGV[4] number of recovered IDs, then recovered IDs, then
// other settled IDs.
var finishReapScript = redis.NewScript(`
local n = tonumber(ARGV[4])
for i = 5, #ARGV do
	redis.call("HDEL", KEYS[2], ARGV[i])
end
if n > 0 then
	redis.call("SADD", KEYS[3], unpack(ARGV, 5, 4 + n))
	redis.call("EXPIRE", KEYS[3], ARGV[3])
end
local score = redis.call("ZSCORE", KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) and redis.call("HLEN", KEYS[2]) == 0 then
	redis.call("ZREM", KEYS[1], ARGV[1])
	return 1
end
return 0`)

func (l *Liveness) reapWorker(ctx context.Context, worker, score string, silentFor time.Duration) error {
	held, err := l.rdb.HGetAll(ctx, heldKey(worker)).Result()
	if err != nil {
		return err
	}
	var recovered, settled []string
	for id, queue := range held {
		outcome, err := l.recoverTask(ctx, queue, id, worker, silentFor)
		if err != nil {
			return fmt.Errorf("task %s: %w", id, err)
		}
		switch outcome {
		case recoverMoved, recoverArchived:
			recovered = append(recovered, id)
			l.recovered.WithLabelValues(queue, map[recoverOutcome]string{recoverMoved: "pending", recoverArchived: "archived"}[outcome]).Inc()
			l.log.Warn("recovered task from dead worker", "task_id", id, "queue", queue, "dead_worker", worker,
				"silent_for", silentFor.Round(time.Millisecond), "archived", outcome == recoverArchived)
		case recoverGone:
			settled = append(settled, id)
		case recoverLeaseLive:
			// asynq still extends the lease: some live worker holds the
			// task now (asynq's recoverer got there first and it ran
			// again). Once the dead worker's own lease must have run out,
			// the claim is stale.
			if silentFor > asynqLease+l.opts.DeadAfter {
				settled = append(settled, id)
			}
		case recoverForAsynq:
			// No reaper saw the worker die until its lease had long
			// expired: asynq's recoverer, which lists such tasks, takes
			// it (moving it here too could run it twice).
			settled = append(settled, id)
			l.log.Info("task of dead worker left to asynq's recoverer", "task_id", id, "queue", queue,
				"dead_worker", worker, "silent_for", silentFor.Round(time.Millisecond))
		case recoverChanged:
			// The task changed under us; the next scan looks again.
		}
	}
	args := []any{worker, score, int(reapedTTL.Seconds()), len(recovered)}
	for _, id := range append(recovered, settled...) {
		args = append(args, id)
	}
	removed, err := finishReapScript.Run(ctx, l.rdb, []string{beatsKey, heldKey(worker), reapedKey(worker)}, args...).Int()
	if err != nil {
		return err
	}
	if removed == 1 {
		l.reaped.Inc()
		l.log.Warn("reaped dead worker", "dead_worker", worker, "silent_for", silentFor.Round(time.Millisecond), "tasks_recovered", len(recovered))
	}
	return nil
}

type recoverOutcome int

const (
	recoverGone      recoverOutcome = iota // not active any more: finished, deleted, or recovered already
	recoverMoved                           // back at the head of its queue
	recoverArchived                        // retries spent: archived
	recoverLeaseLive                       // asynq extended its lease recently: left alone
	recoverChanged                         // message changed between read and move: try again
	recoverForAsynq                        // lease expired long ago: asynq's recoverer takes it
)

// recoverScript moves one active task of a dead worker back to pending (or
// to the archive), as asynq's own Retry/Archive would, but only if the task
// is still active, asynq has not extended its lease for leaseFence, its
// lease has not been expired so long that asynq's recoverer may list it
// (asynqRecoverAge), and its message is the one the caller edited.
//
// KEYS[1] active, KEYS[2] lease, KEYS[3] pending, KEYS[4] archived,
// KEYS[5] task hash, KEYS[6] processed:<day>, KEYS[7] failed:<day>,
// KEYS[8] processed total, KEYS[9] failed total
// ARGV[1] task ID, ARGV[2] message read, ARGV[3] new message, ARGV[4]
// "pending" or "archived", ARGV[5] newest dead lease (s after now), ARGV[6]
// pending_since (ns), ARGV[7] stats expiry (unix s), ARGV[8] max int64,
// ARGV[9] oldest lease left to reapers (s before now)
var recoverScript = redis.NewScript(`
local lease = redis.call("ZSCORE", KEYS[2], ARGV[1])
if not lease then
	return 0
end
local now = tonumber(redis.call("TIME")[1])
if tonumber(lease) > now + tonumber(ARGV[5]) then
	return 3
end
if tonumber(lease) < now - tonumber(ARGV[9]) then
	return 5
end
if redis.call("HGET", KEYS[5], "msg") ~= ARGV[2] then
	return 4
end
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then
	return 0
end
redis.call("ZREM", KEYS[2], ARGV[1])
if ARGV[4] == "archived" then
	redis.call("ZADD", KEYS[4], now, ARGV[1])
	redis.call("HSET", KEYS[5], "msg", ARGV[3], "state", "archived")
else
	redis.call("RPUSH", KEYS[3], ARGV[1])
	redis.call("HSET", KEYS[5], "msg", ARGV[3], "state", "pending", "pending_since", ARGV[6])
end
for _, k in ipairs({KEYS[6], KEYS[7]}) do
	if tonumber(redis.call("INCR", k)) == 1 then
		redis.call("EXPIREAT", k, ARGV[7])
	end
end
if tonumber(redis.call("GET", KEYS[8])) == tonumber(ARGV[8]) then
	redis.call("SET", KEYS[8], 1)
	redis.call("SET", KEYS[9], 1)
else
	redis.call("INCR", KEYS[8])
	redis.call("INCR", KEYS[9])
end
if ARGV[4] == "archived" then
	return 2
end
return 1`)

func (l *Liveness) recoverTask(ctx context.Context, queue, id, worker string, silentFor time.Duration) (recoverOutcome, error) {
	prefix := "asynq:{" + queue + "}:"
	msg, err := l.rdb.HGet(ctx, prefix+"t:"+id, "msg").Bytes()
	if errors.Is(err, redis.Nil) {
		return recoverGone, nil
	}
	if err != nil {
		return 0, err
	}
	now := time.Now()
	reason := fmt.Sprintf("conveyor: worker %s died (no heartbeat for %s); task recovered", worker, silentFor.Round(time.Second))
	edited, state, err := recoveredMessage(msg, reason, now)
	if err != nil {
		return 0, err
	}
	day := now.UTC().Format("2006-01-02")
	keys := []string{prefix + "active", prefix + "lease", prefix + "pending", prefix + "archived", prefix + "t:" + id,
		prefix + "processed:" + day, prefix + "failed:" + day, prefix + "processed", prefix + "failed"}
	n, err := recoverScript.Run(ctx, l.rdb, keys, id, msg, edited, state,
		int((asynqLease - leaseFence).Seconds()), now.UnixNano(), now.Add(statsTTL).Unix(), int64(math.MaxInt64),
		int((asynqRecoverAge - recoverMargin).Seconds())).Int()
	if err != nil {
		return 0, err
	}
	return map[int]recoverOutcome{0: recoverGone, 1: recoverMoved, 2: recoverArchived, 3: recoverLeaseLive,
		4: recoverChanged, 5: recoverForAsynq}[n], nil
}

// Field numbers of asynq's TaskMessage (internal/proto/asynq.proto) that a
// recovery edits.
const (
	fieldRetry        = 5
	fieldRetried      = 6
	fieldErrorMsg     = 7
	fieldLastFailedAt = 11
)

// recoveredMessage edits an encoded asynq TaskMessage as asynq's recoverer
// does for a lease-expired task: the attempt failed with reason; if retries
// remain, retried+1 and the task is to go back to "pending", else it is to
// be "archived". Every other field is kept byte for byte, so this works
// without asynq's internal types.
func recoveredMessage(msg []byte, reason string, now time.Time) ([]byte, string, error) {
	var retry, retried uint64
	out := make([]byte, 0, len(msg)+len(reason)+16)
	for b := msg; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, "", fmt.Errorf("decode task message: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, "", fmt.Errorf("decode task message: %w", protowire.ParseError(m))
		}
		field := b[:n+m]
		b = b[n+m:]
		switch num {
		case fieldRetry, fieldRetried:
			v, k := protowire.ConsumeVarint(field[n:])
			if typ != protowire.VarintType || k < 0 {
				return nil, "", fmt.Errorf("decode task message: field %d is not a varint", num)
			}
			if num == fieldRetry {
				retry = v
				out = append(out, field...)
			} else {
				retried = v
			}
			continue
		case fieldErrorMsg, fieldLastFailedAt:
			continue
		}
		out = append(out, field...)
	}
	state := "pending"
	if retried >= retry {
		state = "archived"
	} else {
		retried++
	}
	if retried > 0 {
		out = protowire.AppendTag(out, fieldRetried, protowire.VarintType)
		out = protowire.AppendVarint(out, retried)
	}
	out = protowire.AppendTag(out, fieldErrorMsg, protowire.BytesType)
	out = protowire.AppendString(out, reason)
	out = protowire.AppendTag(out, fieldLastFailedAt, protowire.VarintType)
	out = protowire.AppendVarint(out, uint64(now.Unix()))
	return out, state, nil
}

// RedisClient opens a go-redis client for opt (what asynq would use), for
// the worker's asynq server and its own scripts. Its connections skip
// go-redis's check before each command (plainConn, conn.go).
func RedisClient(opt asynq.RedisConnOpt) (redis.UniversalClient, error) {
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("redis: unsupported connection type %T", opt)
	}
	rdb.AddHook(plainConns{})
	return rdb, nil
}
