package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/schedule"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// inputBundle is the whole API with limits high enough never to get in the
// way (the input tests and fuzz targets send many requests from one
// address), a user and an admin token.
type inputBundle struct {
	*productBundle
	user string // Authorization of a plain user
}

func setupInput(t testing.TB) *inputBundle {
	t.Helper()
	d, dbURL := testenv.DB(t)
	redisURL, rdb := testenv.Redis(t)
	queues, _ := config.ParseQueues(config.DefaultQueues)
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	limits := config.DefaultAbuse()
	limits.LoginAddrMax, limits.RegisterAddrMax = 1_000_000, 1_000_000
	srv := httpapi.NewServer(httpapi.Options{APIToken: token, BodyLimit: 1 << 16, BcryptCost: bcrypt.MinCost},
		httpapi.Deps{Log: testenv.Logger(t), DB: d, Queue: q,
			Tokens:    auth.NewTokens([]byte(testSecret), time.Hour),
			Limiter:   auth.NewLimiter(1_000_000, time.Hour),
			Guard:     auth.NewGuard(nil, limits, nil),
			Schedules: schedule.NewCatalog(d, rdb, q, tasks.All(), queues)})
	b := &inputBundle{productBundle: &productBundle{srv: srv, db: d, dbURL: dbURL, q: q}}
	_, b.user = b.register(t, "fixture@example.com")
	return b
}

// count returns count(*) of a table.
func count(t testing.TB, d *sqlx.DB, table string) int {
	t.Helper()
	var n int
	if err := d.GetContext(context.Background(), &n, "SELECT count(*) FROM "+table); err != nil {
		t.Fatal(err)
	}
	return n
}

// Strings that are not text are refused where they are decoded, with a 422
// naming the field (JSON) or parameter (query), and a 404 in a path; numbers
// beyond what a field can hold are 422s, never 500s.
func TestInputThatCannotHurt(t *testing.T) {
	t.Parallel()
	b := setupInput(t)
	admin := "Bearer " + token
	cases := []struct {
		name         string
		authz        string
		method, path string
		body         string
		status       int
		field        string // the field the error names ("" for none)
	}{
		{"NUL in a name", "", "POST", "/api/v1/auth/register", `{"email":"n@example.com","password":"long-enough","name":"a\u0000b"}`, 422, "name"},
		{"escape in a name", "", "POST", "/api/v1/auth/register", `{"email":"n@example.com","password":"long-enough","name":"a\u001bb"}`, 422, "name"},
		{"C1 control in a password", "", "POST", "/api/v1/auth/login", `{"email":"n@example.com","password":"a\u0085b"}`, 422, "password"},
		{"noncharacter in a title", "user", "POST", "/api/v1/posts", `{"title":"t\uffff","content":"c"}`, 422, "title"},
		{"NUL in an SKU", "user", "POST", "/api/v1/orders", `{"items":[{"sku":"a","quantity":1,"unit_price_cents":1},{"sku":"\u0000","quantity":1,"unit_price_cents":1}],"currency":"EUR"}`, 422, "items[1].sku"},
		{"NUL in a payload key", admin, "POST", "/api/v1/tasks", `{"type":"system:ping","payload":{"a\u0000":1}}`, 422, "payload.a?"},
		{"backspace escape in a payload key", admin, "POST", "/api/v1/tasks", `{"type":"system:ping","payload":{"a\b":1}}`, 422, "payload.a?"},
		{"form feed escape in a batch item", admin, "POST", "/api/v1/tasks/batch", `{"tasks":[{"type":"system:ping","payload":{"n\f":1}}]}`, 422, "tasks[0].payload.n?"},
		{"NUL in a schedule name", admin, "POST", "/api/v1/schedules", `{"name":"x\u0000","spec":"@daily","task_type":"system:ping"}`, 422, "name"},
		{"NUL in a PATCH spec", admin, "PATCH", "/api/v1/schedules/nope", `{"spec":"@daily\u0000"}`, 422, "spec"},
		{"tab and newline are text", "user", "POST", "/api/v1/posts", `{"title":"a\tb","content":"line\nline\r\n"}`, 201, ""},
		{"NUL in a query parameter", "", "GET", "/api/v1/posts?author_id=1%00", "", 422, "author_id"},
		{"NUL in a path parameter", admin, "GET", "/api/v1/schedules/a%00b", "", 404, ""},
		{"NUL in a task ID", admin, "GET", "/api/v1/tasks/a%00b", "", 404, ""},
		{"author_id beyond int4", "", "GET", "/api/v1/posts?author_id=2147483648", "", 200, ""},
		{"author_id beyond int64", "", "GET", "/api/v1/posts?author_id=99999999999999999999", "", 422, "author_id"},
		{"skip beyond int4", "", "GET", "/api/v1/posts?skip=9223372036854775807", "", 200, ""},
		{"id beyond int4", "user", "GET", "/api/v1/orders/2147483648", "", 404, ""},
		{"id beyond int64", "user", "GET", "/api/v1/orders/99999999999999999999", "", 404, ""},
		{"quantity beyond int64", "user", "POST", "/api/v1/orders", `{"items":[{"sku":"a","quantity":99999999999999999999,"unit_price_cents":1}],"currency":"EUR"}`, 422, "items.quantity"},
		{"wait seconds that wrap around to 0.29s", admin, "GET", "/api/v1/tasks/x?wait=18446744074", "", 422, "wait"},
		{"wait seconds that overflow a duration", admin, "GET", "/api/v1/tasks/x?wait=9223372037", "", 422, "wait"},
		{"countdown overflowing a duration", admin, "POST", "/api/v1/tasks", `{"type":"system:ping","countdown":9223372036854775807}`, 422, "countdown"},
		{"timeout overflowing a duration", admin, "POST", "/api/v1/tasks", `{"type":"system:ping","timeout":9223372036}`, 422, "timeout"},
		{"schedule timeout beyond int4", admin, "POST", "/api/v1/schedules", `{"name":"big","spec":"@daily","task_type":"system:ping","timeout":9223372036}`, 422, "timeout"},
		{"schedule catch-up beyond int4", admin, "POST", "/api/v1/schedules", `{"name":"big","spec":"@daily","task_type":"system:ping","catchup_window":3000000000}`, 422, "catchup_window"},
		{"schedule max_retry beyond int4", admin, "POST", "/api/v1/schedules", `{"name":"big","spec":"@daily","task_type":"system:ping","max_retry":3000000000}`, 422, "max_retry"},
		{"cleanup age overflowing a duration", admin, "POST", "/api/v1/tasks", `{"type":"maintenance:cleanup","payload":{"max_age_hours":2562048}}`, 422, "payload.max_age_hours"},
		{"cleanup age under the floor", admin, "POST", "/api/v1/tasks", `{"type":"maintenance:cleanup","payload":{"max_age_hours":1}}`, 422, "payload.max_age_hours"},
		{"@every 0s", admin, "POST", "/api/v1/schedules", `{"name":"zero","spec":"@every 0s","task_type":"system:ping"}`, 422, "spec"},
		{"@every -1s", admin, "POST", "/api/v1/schedules", `{"name":"neg","spec":"@every -1s","task_type":"system:ping"}`, 422, "spec"},
		{"@every 500ms", admin, "POST", "/api/v1/schedules", `{"name":"fast","spec":"@every 500ms","task_type":"system:ping"}`, 422, "spec"},
		{"@every 1s is fine", admin, "POST", "/api/v1/schedules", `{"name":"fine","spec":"@every 1s","task_type":"system:ping"}`, 201, ""},
		{"reserved ID: a schedule tick", admin, "POST", "/api/v1/tasks", `{"type":"system:ping","task_id":"schedule:nightly:1767225600"}`, 422, "task_id"},
		{"reserved ID: any case", admin, "POST", "/api/v1/tasks", `{"type":"system:ping","task_id":"Schedule:nightly:1"}`, 422, "task_id"},
		{"reserved ID: idempotency", admin, "POST", "/api/v1/tasks", `{"type":"system:ping","task_id":"idem-0123456789abcdef"}`, 422, "task_id"},
		{"reserved ID: an outbox UUID", admin, "POST", "/api/v1/tasks", `{"type":"system:ping","task_id":"0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"}`, 422, "task_id"},
		{"reserved ID: a workflow", admin, "POST", "/api/v1/tasks", `{"type":"system:ping","task_id":"wf:42:step"}`, 422, "task_id"},
		{"a caller's own ID", admin, "POST", "/api/v1/tasks", `{"type":"system:ping","task_id":"my-schedule:1"}`, 202, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			authz := tc.authz
			if authz == "user" {
				authz = b.user
			}
			var body any
			if tc.body != "" {
				body = tc.body
			}
			var e errorBody
			rec := b.call(t, tc.method, tc.path, authz, body, nil)
			if rec.Code != tc.status {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, rec.Code, rec.Body, tc.status)
			}
			if tc.field == "" {
				return
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Fields[tc.field] == "" {
				t.Fatalf("%s: %s, want an error naming %q", tc.name, rec.Body, tc.field)
			}
		})
	}
	// Nothing the refused requests carried was written.
	if n := count(t, b.db, "users"); n != 1 {
		t.Fatalf("%d users, want the fixture only", n)
	}
	if n := count(t, b.db, "orders"); n != 0 {
		t.Fatalf("%d orders, want none", n)
	}
	var names []string
	if err := b.db.SelectContext(context.Background(), &names, "SELECT name FROM schedules ORDER BY name"); err != nil || strings.Join(names, ",") != "fine" {
		t.Fatalf("schedules = %v, %v; want only the valid one", names, err)
	}
}

// An Idempotency-Key's task ID is an HMAC (no caller can compute another
// caller's), the same key and body replay the first answer, and a key used
// again after it expired starts afresh: a new task, not a 409 with the task
// of its previous life.
func TestIdempotencyKeyExpiredStartsAfresh(t *testing.T) {
	t.Parallel()
	b := setupInput(t)
	admin := "Bearer " + token
	enqueue := func() (int, string) {
		var out struct {
			ID string `json:"id"`
		}
		rec := b.call(t, "POST", "/api/v1/tasks", admin, `{"type":"system:ping","countdown":3600}`, &out, "Idempotency-Key", "nightly-2026-01-01")
		return rec.Code, out.ID
	}
	code, first := enqueue()
	if code != http.StatusAccepted || !strings.HasPrefix(first, httpapi.IdempotentTaskIDPrefix) {
		t.Fatalf("first: %d %q", code, first)
	}
	if code, again := enqueue(); code != http.StatusAccepted || again != first {
		t.Fatalf("replay: %d %q, want %q", code, again, first)
	}
	// The unkeyed derivation of the old code (a SHA-256 of owner and key) is
	// not what was used.
	if strings.Contains(first, fmt.Sprintf("%x", "key:API_TOKEN")) {
		t.Fatalf("task ID %s looks derived from public values", first)
	}
	if _, err := b.db.ExecContext(context.Background(), `UPDATE idempotency_keys SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	code, second := enqueue()
	if code != http.StatusAccepted || second == first || !strings.HasPrefix(second, httpapi.IdempotentTaskIDPrefix) {
		t.Fatalf("after expiry: %d %q (first %q), want a new task", code, second, first)
	}
}
