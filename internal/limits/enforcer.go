package limits

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of an Enforcer.
const (
	// SyncInterval is how often workers re-read the overrides: a change
	// reaches every running worker within this time.
	SyncInterval = time.Second
	// LeaseTTL is how long a concurrency slot outlives its last refresh: a
	// worker killed while holding a slot blocks it at most this long (the
	// crash-recovery time). Running handlers refresh it every LeaseTTL/3.
	LeaseTTL = 15 * time.Second
	// MaxInlineWait: a rate wait up to this long is slept in the worker
	// slot (with the start reserved) instead of going back to Redis, because
	// asynq schedules retries to the whole second.
	MaxInlineWait = time.Second
	// MaxThrottleWait caps how long a throttled task waits before it asks
	// again, so tasks already waiting see a changed (looser) limit within
	// this time.
	MaxThrottleWait = 30 * time.Second
	// concurrencyRetry is how soon a task refused a concurrency slot looks
	// again (plus up to the same again of jitter): a slot's end cannot be
	// predicted.
	concurrencyRetry = time.Second
)

// Observer is told about throttles and held slots (the worker's metrics).
type Observer interface {
	TaskThrottled(taskType, kind string)
	ConcurrencySlots(taskType string, delta int)
}

// Enforcer is the worker's side: it admits or throttles tasks by their
// type's effective limits, which it re-reads from the Store every
// SyncInterval.
type Enforcer struct {
	rdb   redis.UniversalClient
	store *Store
	log   *slog.Logger
	obs   Observer
	cur   atomic.Pointer[map[string]Limits]
	// LeaseTTL and MaxInlineWait default to the package constants.
	LeaseTTL      time.Duration
	MaxInlineWait time.Duration
}

// NewEnforcer enforces the limits of store in rdb. obs may be nil. Until
// the first Sync only the code defaults are known.
func NewEnforcer(rdb redis.UniversalClient, store *Store, log *slog.Logger, obs Observer) *Enforcer {
	e := &Enforcer{rdb: rdb, store: store, log: log, obs: obs, LeaseTTL: LeaseTTL, MaxInlineWait: MaxInlineWait}
	defaults := make(map[string]Limits, len(store.defaults))
	for k, v := range store.defaults {
		defaults[k] = v
	}
	e.cur.Store(&defaults)
	return e
}

// Sync re-reads the effective limits of every type.
func (e *Enforcer) Sync(ctx context.Context) error {
	all, err := e.store.All(ctx)
	if err != nil {
		return err
	}
	e.cur.Store(&all)
	return nil
}

// Run syncs every interval until ctx ends. A failed sync keeps the limits
// last read and is logged once until a sync works again.
func (e *Enforcer) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := e.Sync(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			e.log.Warn("limits: sync failed; keeping the limits last read", "err", err)
			failing = true
		case err == nil && failing:
			e.log.Info("limits: sync works again")
			failing = false
		}
	}
}

// Limits returns the limits the enforcer applies to taskType now.
func (e *Enforcer) Limits(taskType string) Limits { return (*e.cur.Load())[taskType] }

// Admit decides whether the task may start now. On yes it returns a
// release func the caller must call when the handler returns (it frees a
// concurrency slot; its lease is refreshed until then). On no the error is
// a *Throttled. Any other error is Redis failing.
//
// A short rate wait (≤ MaxInlineWait) is reserved and slept here, so the
// call may block that long; ctx ends the wait.
func (e *Enforcer) Admit(ctx context.Context, taskType, taskID string, payload []byte) (release func(), err error) {
	l := e.Limits(taskType)
	if l.IsZero() {
		return func() {}, nil
	}
	var slot string
	if c := l.Concurrency; c != nil {
		slot = slotKey(taskType, c.Key, payload)
		ok, err := acquireScript.Run(ctx, e.rdb, []string{slot}, taskID, c.Max, e.LeaseTTL.Milliseconds()).Int()
		if err != nil {
			return nil, fmt.Errorf("limits: acquire slot of %s: %w", taskType, err)
		}
		if ok == 0 {
			e.throttled(taskType, KindConcurrency)
			return nil, &Throttled{Kind: KindConcurrency, Limit: c.String(),
				RetryAfter: concurrencyRetry + rand.N(concurrencyRetry)}
		}
	}
	releaseSlot := func() {
		if slot != "" {
			// Not the task's ctx: it may be cancelled, and the slot must go.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := e.rdb.ZRem(ctx, slot, taskID).Err(); err != nil {
				e.log.Warn("limits: release slot failed; its lease will expire", "task_type", taskType, "task_id", taskID, "err", err)
			}
		}
	}
	if r := l.Rate; r != nil {
		tat, wake := rateKeys(taskType, r.Key, payload)
		res, err := rateScript.Run(ctx, e.rdb, []string{tat, wake},
			micros(r.emission()), r.burst(), micros(e.MaxInlineWait)).Int64Slice()
		if err != nil || len(res) != 2 {
			releaseSlot()
			return nil, fmt.Errorf("limits: rate of %s: %v", taskType, err)
		}
		wait := time.Duration(res[1]) * time.Microsecond
		if res[0] == 0 {
			releaseSlot()
			e.throttled(taskType, KindRate)
			return nil, &Throttled{Kind: KindRate, Limit: r.String(), RetryAfter: min(wait, MaxThrottleWait)}
		}
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				releaseSlot()
				return nil, ctx.Err()
			}
		}
	}
	if slot == "" {
		return func() {}, nil
	}
	return e.hold(ctx, taskType, taskID, slot, releaseSlot), nil
}

// hold refreshes the slot's lease until the returned func is called, which
// also frees the slot.
func (e *Enforcer) hold(ctx context.Context, taskType, taskID, slot string, releaseSlot func()) func() {
	if e.obs != nil {
		e.obs.ConcurrencySlots(taskType, 1)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(e.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.LeaseTTL/3)
			err := refreshScript.Run(rctx, e.rdb, []string{slot}, taskID, e.LeaseTTL.Milliseconds()).Err()
			cancel()
			if err != nil {
				e.log.Warn("limits: refresh slot lease failed", "task_type", taskType, "task_id", taskID, "err", err)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done
			releaseSlot()
			if e.obs != nil {
				e.obs.ConcurrencySlots(taskType, -1)
			}
		})
	}
}

func (e *Enforcer) throttled(taskType, kind string) {
	if e.obs != nil {
		e.obs.TaskThrottled(taskType, kind)
	}
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// bucket names the Redis keys of one limit: the type, or the type and a
// hash of the key field's value (so any value makes a short key and no
// payload data is stored). The braces are a Redis Cluster hash tag: a
// script's keys share one slot.
func bucket(taskType, keyField string, payload []byte) string {
	if keyField == "" {
		return "conveyor:limits:{" + taskType + "}"
	}
	sum := sha256.Sum256(keyValue(payload, keyField))
	return "conveyor:limits:{" + taskType + "|" + hex.EncodeToString(sum[:12]) + "}"
}

func rateKeys(taskType, keyField string, payload []byte) (tat, wake string) {
	b := bucket(taskType, keyField, payload)
	return b + ":tat", b + ":wake"
}

func slotKey(taskType, keyField string, payload []byte) string {
	return bucket(taskType, keyField, payload) + ":slots"
}

// keyValue is the compact JSON of the payload's top-level field, or "null"
// when the payload does not have it (such tasks share one bucket).
func keyValue(payload []byte, field string) []byte {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		return []byte("null")
	}
	v, ok := m[field]
	if !ok {
		return []byte("null")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, v); err != nil {
		return v
	}
	return buf.Bytes()
}

// rateScript is GCRA with a reservation for short waits and a queue hint
// for long ones. KEYS[1]: the theoretical arrival time (µs, Redis clock);
// KEYS[2]: the latest wake-up handed to a throttled task. ARGV: emission
// interval µs, burst, max inline wait µs. Returns {1, µs to sleep} when the
// start is granted (and reserved), {0, µs until a retry} when not.
//
// Throttled tasks get wake-ups one emission interval apart, so a crowd of
// them comes back spread out instead of all at once; new tasks are not
// held back by those hints.
var rateScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local inline = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local newtat = tat + T
local wait = newtat - now - burst * T
if wait <= inline then
  redis.call('SET', KEYS[1], string.format('%.0f', newtat), 'PX', math.ceil((newtat - now) / 1000) + 1000)
  if wait < 0 then wait = 0 end
  return {1, math.floor(wait)}
end
local at = now + wait
local wake = tonumber(redis.call('GET', KEYS[2]) or '0')
if wake + T > at then at = wake + T end
redis.call('SET', KEYS[2], string.format('%.0f', at), 'PX', math.ceil((at - now) / 1000) + 1000)
return {0, math.floor(at - now)}
`)

// acquireScript takes a concurrency slot. KEYS[1]: sorted set of task IDs
// by lease expiry (ms, Redis clock). ARGV: task ID, max, lease ms. Expired
// leases (dead workers) are dropped first; a task that already holds a
// slot (a recovered attempt) keeps it. Returns 1 when granted.
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
`)

// refreshScript extends a held slot's lease (not one already lost).
var refreshScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
`)
