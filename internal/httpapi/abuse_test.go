package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// abuseBundle is a product server (with the dashboard for alice) whose
// limits are counted in a Redis DB of its own; more replicas can share it.
type abuseBundle struct {
	srv   http.Handler
	guard *auth.Guard
	db    *store.Users
	rdb   *redis.Client
	build func(config.Abuse) (http.Handler, *auth.Guard)
}

func setupAbuse(t *testing.T, limits config.Abuse) *abuseBundle {
	t.Helper()
	d, _ := testenv.DB(t)
	redisURL, rdb := testenv.Redis(t)
	queues, _ := config.ParseQueues(config.DefaultQueues)
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	monitor := &httpapi.Monitor{ReadWrite: newMonitor(t, redisURL, false), ReadOnly: newMonitor(t, redisURL, true)}
	b := &abuseBundle{db: store.NewUsers(d), rdb: rdb}
	b.build = func(limits config.Abuse) (http.Handler, *auth.Guard) {
		guard := auth.NewGuard(rdb, limits, func(err error) { t.Errorf("limiter: %v", err) })
		srv := httpapi.NewServer(
			httpapi.Options{BodyLimit: 1 << 16, BcryptCost: bcrypt.MinCost,
				MonitorUsers:   []config.MonitorUser{{Name: "alice", Hash: bcryptHash(t, alicePassword)}},
				TrustedProxies: nil},
			httpapi.Deps{Log: testenv.Logger(t), DB: d, Queue: q, Monitor: monitor, Guard: guard,
				Tokens: auth.NewTokens([]byte(testSecret), time.Hour), Limiter: auth.NewRedisLimiter(rdb, 5, time.Hour)})
		return srv, guard
	}
	b.srv, b.guard = b.build(limits)
	return b
}

// from sends a JSON request from the client address addr.
func from(srv http.Handler, addr, method, path string, body any, header ...string) *httptest.ResponseRecorder {
	raw, _ := json.Marshal(body)
	req := httptest.NewRequest(method, path, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = addr
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	return rec
}

func (b *abuseBundle) addUser(t *testing.T, email, password string) {
	t.Helper()
	hash, err := auth.HashPassword(password, bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.db.Create(context.Background(), &store.User{Email: email, Name: "N", PasswordHash: hash}); err != nil {
		t.Fatal(err)
	}
}

func require429(t *testing.T, rec *httptest.ResponseRecorder, what string) {
	t.Helper()
	ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if rec.Code != http.StatusTooManyRequests || err != nil || ra < 1 {
		t.Fatalf("%s: %d Retry-After %q %s, want 429 with Retry-After ≥ 1", what, rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	var e errorBody
	if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error.Code != "too_many_requests" {
		t.Fatalf("%s: body %s", what, rec.Body)
	}
}

// A flood of logins with a new email each time from one address is cut
// off by the per-address limit before any hashing, while a legitimate user
// on another address logs in during the flood; the count is shared by api
// replicas through Redis.
func TestLoginLimitedPerAddressWhileOthersLogIn(t *testing.T) {
	t.Parallel()
	limits := config.DefaultAbuse()
	limits.LoginAddrMax = 10
	// The legitimate login may queue behind the flood's admitted hashes at
	// the hash gate (one slot on two cores), each taking over a second under
	// the race detector on a loaded machine: this test is about the address
	// limit, so the gate's wait must not decide it.
	limits.HashWait = time.Minute
	b := setupAbuse(t, limits)
	replica2, _ := b.build(limits)
	b.addUser(t, "grace@example.com", "grace-password")

	const attacker = "203.0.113.7:4000"
	var allowed, limited atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				srv := b.srv
				if w%2 == 1 {
					srv = replica2
				}
				rec := from(srv, attacker, "POST", "/api/v1/auth/login",
					map[string]string{"email": fmt.Sprintf("guess-%d-%d@example.com", w, i), "password": "guess-guess"})
				switch rec.Code {
				case http.StatusUnauthorized:
					allowed.Add(1)
				case http.StatusTooManyRequests:
					limited.Add(1)
				default:
					t.Errorf("flood login: %d %s", rec.Code, rec.Body)
					return
				}
			}
		})
	}
	// Wait until the flood is being refused, then log in from elsewhere
	// while it goes on.
	testenv.Eventually(t, 30*time.Second, func() bool { return limited.Load() >= 20 }, "flood never limited")
	rec := from(b.srv, "198.51.100.9:5000", "POST", "/api/v1/auth/login",
		map[string]string{"email": "grace@example.com", "password": "grace-password"})
	close(stop)
	wg.Wait()
	if rec.Code != http.StatusOK {
		t.Fatalf("legitimate login during the flood: %d %s", rec.Code, rec.Body)
	}
	if got := allowed.Load(); got != int32(limits.LoginAddrMax) {
		t.Fatalf("%d flood attempts reached the password check across two replicas, want exactly %d", got, limits.LoginAddrMax)
	}
	require429(t, from(replica2, attacker, "POST", "/api/v1/auth/login",
		map[string]string{"email": "grace@example.com", "password": "grace-password"}), "the right password from the flooding address")
	// Another address in the attacker's IPv6 /64 counts as the same client.
	v6 := config.DefaultAbuse()
	v6.LoginAddrMax = 2
	b6 := setupAbuse(t, v6)
	for i := range 2 {
		if rec := from(b6.srv, fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1), "POST", "/api/v1/auth/login",
			map[string]string{"email": "x@example.com", "password": "whatever1"}); rec.Code != http.StatusUnauthorized {
			t.Fatalf("v6 attempt %d: %d", i, rec.Code)
		}
	}
	require429(t, from(b6.srv, "[2001:db8:1:2:ffff::1]:1", "POST", "/api/v1/auth/login",
		map[string]string{"email": "x@example.com", "password": "whatever1"}), "third address of one IPv6 /64")
	if rec := from(b6.srv, "[2001:db8:1:3::1]:1", "POST", "/api/v1/auth/login",
		map[string]string{"email": "x@example.com", "password": "whatever1"}); rec.Code != http.StatusUnauthorized {
		t.Fatalf("another /64: %d", rec.Code)
	}
}

func TestRegisterLimitedPerAddress(t *testing.T) {
	t.Parallel()
	limits := config.DefaultAbuse()
	limits.RegisterAddrMax = 3
	b := setupAbuse(t, limits)
	reg := func(addr string, i int) *httptest.ResponseRecorder {
		return from(b.srv, addr, "POST", "/api/v1/auth/register",
			map[string]string{"email": fmt.Sprintf("new-%d@example.com", i), "password": "long-enough", "name": "New"})
	}
	for i := range 3 {
		if rec := reg("203.0.113.7:1", i); rec.Code != http.StatusCreated {
			t.Fatalf("registration %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	require429(t, reg("203.0.113.7:2", 3), "fourth registration from one address")
	if rec := reg("198.51.100.9:1", 4); rec.Code != http.StatusCreated {
		t.Fatalf("registration from another address: %d %s", rec.Code, rec.Body)
	}
	// The refused registration wrote nothing.
	if _, err := b.db.GetByEmail(context.Background(), "new-3@example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused registration: %v", err)
	}
}

// Dashboard guesses are limited per user name + address (failures) and per
// address (password checks), each a 429 with Retry-After; alice still logs
// in from her own address.
func TestMonitoringLoginLimited(t *testing.T) {
	t.Parallel()
	limits := config.DefaultAbuse()
	limits.MonitorMaxFailures, limits.MonitorAddrMax = 3, 6
	b := setupAbuse(t, limits)
	basic := func(addr, user, password string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/monitoring/api/queues", nil)
		req.RemoteAddr = addr
		req.SetBasicAuth(user, password)
		rec := httptest.NewRecorder()
		b.srv.ServeHTTP(rec, req)
		return rec
	}
	const attacker = "203.0.113.7:1"
	for i := range 3 {
		if rec := basic(attacker, "alice", fmt.Sprint("guess-", i)); rec.Code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, rec.Code)
		}
	}
	require429(t, basic(attacker, "alice", alicePassword), "alice's password after 3 failures from the address")
	if rec := basic("198.51.100.9:1", "alice", alicePassword); rec.Code != http.StatusOK {
		t.Fatalf("alice from her own address: %d %s", rec.Code, rec.Body)
	}
	// Other names from the attacker's address: the per-address cap of 6
	// checks (the refused one above counted) is reached after 2 more.
	for i := range 2 {
		if rec := basic(attacker, fmt.Sprint("user", i), "x"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("name %d: %d", i, rec.Code)
		}
	}
	require429(t, basic(attacker, "someone-else", "x"), "a seventh check from one address")
	// Alice's cached login keeps working (the dashboard polls) without
	// counting against anything.
	for range 20 {
		if rec := basic("198.51.100.9:1", "alice", alicePassword); rec.Code != http.StatusOK {
			t.Fatalf("alice polling: %d", rec.Code)
		}
	}
}

// With every hashing slot taken, a login waits at most PASSWORD_HASH_WAIT
// and is then a 429; once a slot frees, logins go through.
func TestPasswordHashingCapped(t *testing.T) {
	t.Parallel()
	limits := config.DefaultAbuse()
	limits.HashConcurrency, limits.HashWait = 1, 0
	b := setupAbuse(t, limits)
	b.addUser(t, "grace@example.com", "grace-password")
	leave, ok := b.guard.Hashing.Enter(context.Background())
	if !ok {
		t.Fatal("no slot")
	}
	login := func() *httptest.ResponseRecorder {
		return from(b.srv, "198.51.100.9:1", "POST", "/api/v1/auth/login",
			map[string]string{"email": "grace@example.com", "password": "grace-password"})
	}
	require429(t, login(), "login with every hashing slot busy")
	require429(t, from(b.srv, "198.51.100.9:1", "POST", "/api/v1/auth/register",
		map[string]string{"email": "new@example.com", "password": "long-enough", "name": "New"}), "register with every slot busy")
	leave()
	if rec := login(); rec.Code != http.StatusOK {
		t.Fatalf("login with a free slot: %d %s", rec.Code, rec.Body)
	}
}

// The gate itself: n holders at most, a waiter gets a slot freed within
// its wait, and nothing past it.
func TestHashGate(t *testing.T) {
	t.Parallel()
	g := auth.NewHashGate(2, time.Minute)
	l1, ok1 := g.Enter(context.Background())
	_, ok2 := g.Enter(context.Background())
	if !ok1 || !ok2 {
		t.Fatal("two slots")
	}
	got := make(chan bool)
	go func() {
		_, ok := g.Enter(context.Background())
		got <- ok
	}()
	l1()
	if !<-got {
		t.Fatal("a waiter did not get the freed slot")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := g.Enter(ctx); ok {
		t.Fatal("a third holder with every slot taken")
	}
}
