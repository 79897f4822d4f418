package testenv

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisServer is a private redis-server process, for tests that take Redis
// away (an outage) and bring it back. Never stop the shared Redis of
// services.sh for that: every other test uses it.
//
// Data survives Kill and Start (append-only file in a temporary directory,
// fsynced on every write), as it would on a production Redis restart.
type RedisServer struct {
	Addr string // 127.0.0.1:port, the same across restarts

	t    testing.TB
	bin  string
	dir  string
	proc *Proc
}

// StartRedisServer starts redis-server on a free loopback port and waits
// until it answers PING. It is killed at cleanup.
func StartRedisServer(t testing.TB) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("testenv: redis-server not found in PATH (apt-get install redis-server): %v", err)
	}
	r := &RedisServer{Addr: FreeAddr(t), t: t, bin: bin, dir: t.TempDir()}
	r.Start()
	return r
}

// URL is the server's database 0 as REDIS_URL.
func (r *RedisServer) URL() string { return "redis://" + r.Addr + "/0" }

// Start (re)starts the server on its address and waits until it answers
// PING. It fails the test if the server is already running.
func (r *RedisServer) Start() {
	r.t.Helper()
	if r.proc != nil && !r.proc.Exited() {
		r.t.Fatalf("testenv: redis-server on %s is already running", r.Addr)
	}
	_, port, _ := strings.Cut(r.Addr, ":")
	r.proc = Start(r.t, "redis-server "+r.Addr, r.bin, nil,
		"--port", port, "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--appendonly", "yes", "--appendfsync", "always")
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer c.Close()
	Eventually(r.t, 20*time.Second, func() bool {
		if r.proc.Exited() {
			r.t.Fatalf("testenv: redis-server exited at start:\n%s", r.proc.Output())
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	}, "redis-server on %s does not answer PING", r.Addr)
}

// Kill stops the server with SIGKILL (a crash, no goodbye to clients) and
// waits until it is gone.
func (r *RedisServer) Kill() {
	r.t.Helper()
	r.proc.Kill()
}
