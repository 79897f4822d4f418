package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bins are the paths of the three real binaries, built for end-to-end tests.
type Bins struct{ API, Worker, Scheduler string }

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// Binaries builds cmd/api, cmd/worker and cmd/scheduler once per test
// process (the Go build cache makes later builds cheap) and returns them.
func Binaries(t testing.TB) Bins {
	t.Helper()
	buildOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			buildErr = err
			return
		}
		buildDir, err = os.MkdirTemp("", "conveyor-bin-")
		if err != nil {
			buildErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", buildDir+string(os.PathSeparator), "./cmd/api", "./cmd/worker", "./cmd/scheduler")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("testenv: %v", buildErr)
	}
	return Bins{
		API:       filepath.Join(buildDir, "api"),
		Worker:    filepath.Join(buildDir, "worker"),
		Scheduler: filepath.Join(buildDir, "scheduler"),
	}
}

func repoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("cannot locate source")
	}
	return filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
}

// RepoPath returns a path inside the repository (for fixtures such as
// deploy/schedules.yaml).
func RepoPath(t testing.TB, rel string) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, rel)
}

// Proc is a running binary under test. Its combined output is kept and
// printed to the test log if the test fails.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Start runs path with exactly env (plus PATH and HOME) and args. The process
// is killed at cleanup if still running.
func Start(t testing.TB, name, path string, env []string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p := &Proc{Name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.Output())
		}
	})
	return p
}

// Output is everything the process wrote so far.
func (p *Proc) Output() string { return p.out.String() }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) { _ = p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL (a crash) and waits for the process to be gone.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for a clean exit; it returns
// the process's exit error (nil for exit code 0).
func (p *Proc) Stop(timeout time.Duration) error {
	p.Signal(syscall.SIGTERM)
	return p.Wait(timeout)
}

// Wait waits up to timeout for the process to exit.
func (p *Proc) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitHTTP polls url until it answers 200 or timeout passes. p, if not nil,
// is checked for an early exit so a crash fails fast with its output.
func WaitHTTP(t testing.TB, url string, timeout time.Duration, p *Proc) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p != nil && p.Exited() {
			t.Fatalf("%s exited before %s was ready: %v\n%s", p.Name, url, p.err, p.Output())
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready after %s", url, timeout)
}

// Eventually polls cond every interval until it returns true or timeout
// passes, then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Platform is a running Conveyor: its own database and Redis DB, an api and
// (optionally) workers and a scheduler, all real binaries.
type Platform struct {
	t        testing.TB
	Bins     Bins
	DBURL    string
	RedisURL string
	APIURL   string
	Token    string
	API      *Proc
	Env      []string // the environment every process got
}

// PlatformOptions tune StartPlatform.
type PlatformOptions struct {
	Env       []string // extra KEY=VALUE pairs, appended after the defaults (later wins)
	NoWorker  bool
	Scheduler bool // start one scheduler too
	// RedisURL, if set, replaces the per-test DB of the shared Redis (for
	// example a StartRedisServer the test stops and starts again).
	RedisURL string
	// DatabaseURL, if set, replaces the fresh database on the shared
	// PostgreSQL (for example a StartPGServer the test stops and starts);
	// the api migrates it at start.
	DatabaseURL string
	// RedisCluster, if set, is used instead of any Redis URL: every process gets
	// REDIS_CLUSTER_ADDRS (and its password) instead of REDIS_URL, and
	// Platform.RedisURL stays empty.
	RedisCluster *RedisCluster
}

// StartPlatform migrates a fresh database and starts an api and a worker
// (and a scheduler if asked), waiting until each is healthy.
func StartPlatform(t testing.TB, o PlatformOptions) *Platform {
	t.Helper()
	dbURL := o.DatabaseURL
	if dbURL == "" {
		_, dbURL = DB(t)
	}
	redisURL := o.RedisURL
	if redisURL == "" && o.RedisCluster == nil {
		redisURL, _ = Redis(t)
	}
	redisEnv := []string{"REDIS_URL=" + redisURL}
	if o.RedisCluster != nil {
		redisURL, redisEnv = "", o.RedisCluster.Env()
	}
	bins := Binaries(t)
	httpAddr := FreeAddr(t)
	p := &Platform{t: t, Bins: bins, DBURL: dbURL, RedisURL: redisURL,
		APIURL: "http://" + httpAddr, Token: "e2e-token-" + randomHex(12)}
	p.Env = append([]string{"DATABASE_URL=" + dbURL}, redisEnv...)
	p.Env = append(p.Env,
		"API_TOKEN="+p.Token,
		"HTTP_ADDR="+httpAddr,
		"DEV_MODE=true",
		// Shared by the api and the worker, so the verification links in
		// welcome emails verify.
		"JWT_SECRET=e2e-jwt-secret-"+randomHex(16),
		"LOG_FORMAT=json",
		"LOG_LEVEL=debug",
		"RETRY_BASE=1s",
		"RETRY_MAX=2s",
		"SHUTDOWN_TIMEOUT=20s",
	)
	p.Env = append(p.Env, o.Env...)
	p.API = Start(t, "api", bins.API, p.Env)
	WaitHTTP(t, p.APIURL+"/healthz", 30*time.Second, p.API)
	if !o.NoWorker {
		p.StartWorker()
	}
	if o.Scheduler {
		p.StartScheduler()
	}
	return p
}

// StartWorker starts one more worker with its own metrics port.
func (p *Platform) StartWorker(extraEnv ...string) (*Proc, string) {
	return p.startSide("worker", p.Bins.Worker, extraEnv)
}

// StartScheduler starts one more scheduler with its own metrics port.
func (p *Platform) StartScheduler(extraEnv ...string) (*Proc, string) {
	return p.startSide("scheduler", p.Bins.Scheduler, extraEnv)
}

// startSide starts a worker or scheduler and waits for its /healthz; it
// returns the process and its side-port base URL.
func (p *Platform) startSide(name, bin string, extraEnv []string) (*Proc, string) {
	p.t.Helper()
	addr := FreeAddr(p.t)
	env := append(append(append([]string{}, p.Env...), "METRICS_ADDR="+addr), extraEnv...)
	proc := Start(p.t, name, bin, env)
	WaitHTTP(p.t, "http://"+addr+"/healthz", 30*time.Second, proc)
	return proc, "http://" + addr
}

// Do sends a request to the api with the bootstrap token and decodes a JSON
// answer into out (if not nil). It returns the status code and the raw body.
func (p *Platform) Do(method, path string, body any, out any) (int, []byte) {
	p.t.Helper()
	return DoJSON(p.t, method, p.APIURL+path, "Bearer "+p.Token, body, out)
}

// DoJSON sends body (marshalled unless it is a string or []byte) with the
// given Authorization header (empty for none).
func DoJSON(t testing.TB, method, url, authorization string, body any, out any) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode, raw
}
