package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// productBundle is a server with the product API over a fresh database and
// Redis DB of its own.
type productBundle struct {
	srv   http.Handler
	db    *sqlx.DB
	dbURL string
	q     *queue.Client
}

const testSecret = "0123456789abcdef0123456789abcdef"

func setupProduct(t *testing.T, redisURL string) *productBundle {
	t.Helper()
	d, dbURL := testenv.DB(t)
	if redisURL == "" {
		redisURL, _ = testenv.Redis(t)
	}
	queues, _ := config.ParseQueues(config.DefaultQueues)
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	srv := httpapi.NewServer(
		httpapi.Options{APIToken: token, BodyLimit: 1 << 16, BcryptCost: bcrypt.MinCost,
			CORSAllowedOrigins: []string{"https://app.example.com"}},
		httpapi.Deps{Log: testenv.Logger(t), DB: d, Queue: q,
			Tokens: auth.NewTokens([]byte(testSecret), time.Hour), Limiter: auth.NewLimiter(5, time.Hour)})
	return &productBundle{srv: srv, db: d, dbURL: dbURL, q: q}
}

// call sends a request with the given Authorization (empty: none) and body
// (a string is sent as is, anything else as JSON), decoding a JSON answer
// into out when out is not nil.
func (b *productBundle) call(t testing.TB, method, path, authz string, body any, out any, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	var raw []byte
	switch v := body.(type) {
	case nil:
	case string:
		raw = []byte(v)
	default:
		var err error
		if raw, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(raw))
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	if out != nil && rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, rec.Body.String(), err)
		}
	}
	return rec
}

type userJSON struct {
	ID        int64  `json:"id"`
	Email     string `json:"email"`
	Name      string `json:"name"`
	Role      string `json:"role"`
	PostCount int64  `json:"post_count"`
}

// register creates a user through the API and returns it with a bearer
// Authorization for it.
func (b *productBundle) register(t testing.TB, email string) (userJSON, string) {
	t.Helper()
	var u userJSON
	rec := b.call(t, "POST", "/api/v1/auth/register", "",
		map[string]string{"email": email, "password": "s3cret-pass", "name": "User " + email}, &u)
	if rec.Code != http.StatusCreated {
		t.Fatalf("register %s: %d %s", email, rec.Code, rec.Body)
	}
	return u, b.login(t, email, "s3cret-pass")
}

func (b *productBundle) login(t testing.TB, email, password string) string {
	t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	rec := b.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"email": email, "password": password}, &tok)
	if rec.Code != http.StatusOK || tok.TokenType != "bearer" || tok.ExpiresIn != 3600 || tok.AccessToken == "" {
		t.Fatalf("login %s: %d %s", email, rec.Code, rec.Body)
	}
	return "Bearer " + tok.AccessToken
}

// admin creates an admin user directly (as `api createuser --admin` does).
func (b *productBundle) admin(t testing.TB, email string) (userJSON, string) {
	t.Helper()
	hash, err := auth.HashPassword("admin-pass-123", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	u := store.User{Email: email, Name: "Admin", PasswordHash: hash, Role: store.RoleAdmin}
	if err := store.NewUsers(b.db).Create(context.Background(), &u); err != nil {
		t.Fatal(err)
	}
	return userJSON{ID: u.ID, Email: u.Email, Name: u.Name, Role: u.Role}, b.login(t, email, "admin-pass-123")
}

// apiKey creates an API key (as `api createkey` does).
func (b *productBundle) apiKey(t testing.TB, name string) string {
	t.Helper()
	key, hash := auth.NewAPIKey()
	if _, err := store.NewAPIKeys(b.db).Create(context.Background(), name, hash); err != nil {
		t.Fatal(err)
	}
	return "Bearer " + key
}

func TestRegisterLoginMe(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "")
	rec := b.call(t, "POST", "/api/v1/auth/register", "",
		map[string]string{"email": "ada@example.com", "password": "s3cret-pass", "name": "Ada"}, nil)
	if rec.Code != http.StatusCreated {
		t.Fatalf("register: %d %s", rec.Code, rec.Body)
	}
	if body := rec.Body.String(); strings.Contains(body, "password") || strings.Contains(body, "$2a$") {
		t.Fatalf("register response leaks the password or its hash: %s", body)
	}
	// The welcome email is in the outbox, committed with the user.
	st, err := store.NewOutbox(b.db).Stats(context.Background())
	if err != nil || st.Pending != 1 {
		t.Fatalf("outbox after register = %+v, %v", st, err)
	}

	var e errorBody
	if rec := b.call(t, "POST", "/api/v1/auth/register", "",
		map[string]string{"email": "ADA@example.com", "password": "another-pass", "name": "Ada 2"}, &e); rec.Code != http.StatusConflict {
		t.Fatalf("duplicate email: %d %s", rec.Code, rec.Body)
	}
	e = errorBody{}
	if rec := b.call(t, "POST", "/api/v1/auth/register", "",
		map[string]string{"email": "not-an-email", "password": "short", "name": ""}, &e); rec.Code != http.StatusUnprocessableEntity ||
		e.Error.Fields["email"] == "" || e.Error.Fields["password"] != "must be at least 8 characters" || e.Error.Fields["name"] != "is required" {
		t.Fatalf("invalid register: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "POST", "/api/v1/auth/register", "", `{"email":"x@example.com","password":"12345678","name":"X","role":"admin"}`, nil); rec.Code != http.StatusUnprocessableEntity ||
		!strings.Contains(rec.Body.String(), `"role":"unknown field"`) {
		t.Fatalf("unknown field: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "POST", "/api/v1/auth/register", "", `{"email":`, nil); rec.Code != http.StatusBadRequest {
		t.Fatalf("malformed JSON: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "POST", "/api/v1/auth/register", "", `{"email":1,"password":"12345678","name":"X"}`, nil); rec.Code != http.StatusUnprocessableEntity ||
		!strings.Contains(rec.Body.String(), `"email":"must be of type string`) {
		t.Fatalf("wrong type: %d %s", rec.Code, rec.Body)
	}

	if rec := b.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"email": "ada@example.com", "password": "wrong-pass"}, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", rec.Code)
	}
	if rec := b.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"email": "nobody@example.com", "password": "whatever1"}, nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("unknown email: %d", rec.Code)
	}
	authz := b.login(t, "Ada@Example.com", "s3cret-pass")
	var me userJSON
	if rec := b.call(t, "GET", "/api/v1/users/me", authz, nil, &me); rec.Code != http.StatusOK ||
		me.Email != "ada@example.com" || me.Role != "user" || me.Name != "Ada" {
		t.Fatalf("me: %d %s", rec.Code, rec.Body)
	}
	for _, bad := range []string{"Bearer not-a-token", "Bearer " + strings.Repeat("a", 20) + ".b.c", "Token abc", "Bearer cvk_unknown"} {
		if rec := b.call(t, "GET", "/api/v1/users/me", bad, nil, nil); rec.Code != http.StatusUnauthorized ||
			rec.Header().Get("WWW-Authenticate") == "" {
			t.Fatalf("%q: %d", bad, rec.Code)
		}
	}
}

func TestLoginFailuresAreRateLimited(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "")
	b.register(t, "eve@example.com")
	for i := range 5 {
		if rec := b.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"email": "eve@example.com", "password": fmt.Sprint("guess", i)}, nil); rec.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, rec.Code)
		}
	}
	// Blocked now, even with the right password and a spoofed forwarding header.
	rec := b.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"email": "eve@example.com", "password": "s3cret-pass"}, nil,
		"X-Forwarded-For", "203.0.113.9")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("after 5 failures: %d %s (Retry-After %q)", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	// Another account from the same address is not affected.
	b.register(t, "frank@example.com")
}

func TestAPIKeysAndBootstrapTokenAreAdminForTasks(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "")
	key := b.apiKey(t, "billing")
	for _, authz := range []string{key, "Bearer " + token} {
		var out map[string]any
		if rec := b.call(t, "GET", "/api/v1/queues", authz, nil, &out); rec.Code != http.StatusOK {
			t.Fatalf("queues with %q: %d %s", authz[:12], rec.Code, rec.Body)
		}
		if _, ok := out["outbox_pending"]; !ok {
			t.Fatalf("queues response lacks outbox_pending: %v", out)
		}
		if _, ok := out["queues"].([]any); !ok {
			t.Fatalf("queues response lacks the queues array: %v", out)
		}
	}
	_, admin := b.admin(t, "root@example.com")
	if rec := b.call(t, "POST", "/api/v1/tasks", admin, map[string]any{"type": "system:ping", "payload": map[string]any{}}, nil); rec.Code != http.StatusAccepted {
		t.Fatalf("admin JWT enqueue: %d %s", rec.Code, rec.Body)
	}
	_, user := b.register(t, "joe@example.com")
	if rec := b.call(t, "POST", "/api/v1/tasks", user, map[string]any{"type": "system:ping"}, nil); rec.Code != http.StatusForbidden {
		t.Fatalf("user enqueue: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "POST", "/api/v1/orders", key, map[string]any{"currency": "EUR", "items": []any{}}, nil); rec.Code != http.StatusForbidden {
		t.Fatalf("API key creating an order: %d %s", rec.Code, rec.Body)
	}
}

func itoa(n int64) string { return fmt.Sprint(n) }

// Guesses sent at once must not all get past the limiter before the first
// failures are counted: at most Max of them reach the password check.
func TestLoginLimitHoldsForConcurrentGuesses(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "") // 5 failures per hour
	const n = 20
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// An unknown email costs a full bcrypt comparison, so every
			// request is still checking while the others arrive.
			rec := b.call(t, "POST", "/api/v1/auth/login", "", map[string]string{"email": "ghost@example.com", "password": fmt.Sprint("guess", i)}, nil)
			codes <- rec.Code
		})
	}
	wg.Wait()
	close(codes)
	counts := map[int]int{}
	for c := range codes {
		counts[c]++
	}
	if counts[http.StatusUnauthorized] > 5 || counts[http.StatusUnauthorized]+counts[http.StatusTooManyRequests] != n {
		t.Fatalf("%d concurrent guesses: %v, want at most 5 × 401 and the rest 429", n, counts)
	}
}

// The login limiter keeps its key (email and IP) for a whole window, so the
// email must be bounded: a megabyte "email" per failed login would pile up.
func TestLoginRefusesOversizedEmail(t *testing.T) {
	t.Parallel()
	b := setupProduct(t, "")
	var e errorBody
	rec := b.call(t, "POST", "/api/v1/auth/login", "",
		map[string]string{"email": strings.Repeat("a", 60<<10) + "@example.com", "password": "whatever1"}, &e)
	if rec.Code != http.StatusUnprocessableEntity || e.Error.Fields["email"] == "" {
		t.Fatalf("60 KiB email: %d %s, want 422 naming email", rec.Code, rec.Body)
	}
}
