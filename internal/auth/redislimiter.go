package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisLimiter is the login limiter shared by every api replica: a fixed
// window per key in Redis, counted atomically by a script (so guesses sent
// at once to different replicas cannot slip past the limit). Keys are
// hashed: emails and addresses are not stored in Redis. While Redis cannot
// be reached it falls back to a per-process Limiter rather than refusing
// every login or allowing unlimited guesses, and reports the error to
// OnError.
type RedisLimiter struct {
	rdb      redis.UniversalClient
	prefix   string // Redis key prefix, one per limit
	max      int
	window   time.Duration
	fallback *Limiter
	// OnError, when set, is told about each Redis failure (for logging).
	OnError func(error)
}

// NewRedisLimiter allows max login attempts per key within window, counted
// in rdb.
func NewRedisLimiter(rdb redis.UniversalClient, max int, window time.Duration) *RedisLimiter {
	return NewNamedRedisLimiter(rdb, "login-limit", max, window)
}

// NewNamedRedisLimiter is a RedisLimiter whose counters live under their own
// name, so several limits (per email, per address, per dashboard user) can
// share one Redis without counting each other's attempts.
func NewNamedRedisLimiter(rdb redis.UniversalClient, name string, max int, window time.Duration) *RedisLimiter {
	return &RedisLimiter{rdb: rdb, prefix: "conveyor:" + name + ":", max: max, window: window, fallback: NewLimiter(max, window)}
}

// attemptScript: KEYS[1] the counter, ARGV[1] the limit, ARGV[2] the window
// in ms. Returns {1, 0} when the attempt may go ahead (and counts it), or
// {0, ms until the window ends} when it may not.
var attemptScript = redis.NewScript(`
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then
  return {0, redis.call('PTTL', KEYS[1])}
end
if redis.call('INCR', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {1, 0}
`)

func (l *RedisLimiter) redisKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return l.prefix + hex.EncodeToString(sum[:16])
}

// Attempt implements LoginLimiter.
func (l *RedisLimiter) Attempt(ctx context.Context, key string) (bool, time.Duration) {
	res, err := attemptScript.Run(ctx, l.rdb, []string{l.redisKey(key)}, l.max, l.window.Milliseconds()).Int64Slice()
	if err != nil || len(res) != 2 {
		l.failed(err)
		return l.fallback.Attempt(ctx, key)
	}
	if res[0] == 1 {
		return true, 0
	}
	wait := time.Duration(res[1]) * time.Millisecond
	if wait <= 0 { // no expiry set (should not happen): a full window
		wait = l.window
	}
	return false, wait
}

// Reset implements LoginLimiter.
func (l *RedisLimiter) Reset(ctx context.Context, key string) {
	l.fallback.Reset(ctx, key)
	if err := l.rdb.Del(ctx, l.redisKey(key)).Err(); err != nil {
		l.failed(err)
	}
}

func (l *RedisLimiter) failed(err error) {
	if l.OnError != nil && err != nil {
		l.OnError(err)
	}
}
