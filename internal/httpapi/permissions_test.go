package httpapi_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/schedule"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// setupFull is setupProduct with every dependency of every route, the
// schedules catalog included, so that all endpoints answer.
func setupFull(t *testing.T) *productBundle {
	t.Helper()
	return setupFullWith(t, httpapi.Options{CORSAllowedOrigins: []string{"https://app.example.com"}})
}

// setupFullWith serves the whole API with opts (APIToken, BcryptCost and,
// unless set, BodyLimit are filled in) on a database and Redis DB of its own.
func setupFullWith(t testing.TB, opts httpapi.Options) *productBundle {
	t.Helper()
	d, dbURL := testenv.DB(t)
	redisURL, rdb := testenv.Redis(t)
	queues, _ := config.ParseQueues(config.DefaultQueues)
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	opts.APIToken, opts.BcryptCost = token, bcrypt.MinCost
	if opts.BodyLimit == 0 {
		opts.BodyLimit = 1 << 16
	}
	srv := httpapi.NewServer(opts,
		httpapi.Deps{Log: testenv.Logger(t), DB: d, Queue: q,
			Tokens:    auth.NewTokens([]byte(testSecret), time.Hour),
			Limiter:   auth.NewLimiter(5, time.Hour),
			Schedules: schedule.NewCatalog(d, rdb, q, tasks.All(), queues)})
	return &productBundle{srv: srv, db: d, dbURL: dbURL, q: q}
}

// Callers of the permission matrix.
const (
	anonymous = "anonymous"
	owner     = "owner"     // the user who owns the fixtures (posts, orders)
	otherUser = "other"     // another plain user
	adminJWT  = "admin"     // a user with the admin role
	apiKey    = "api-key"   // a key from `api createkey`
	bootstrap = "API_TOKEN" // the bootstrap token; expected to act as an API key
)

var principals = []string{anonymous, owner, otherUser, adminJWT, apiKey, bootstrap}

// fixtures are the callers and a factory of fresh resources: every request
// that changes something gets resources of its own, so the matrix's cells
// run in parallel and in any order.
type fixtures struct {
	b            *productBundle
	owner, other userJSON
	authz        map[string]string
	seq          atomic.Int64
}

func newFixtures(t *testing.T, b *productBundle) *fixtures {
	f := &fixtures{b: b, authz: map[string]string{anonymous: "", bootstrap: "Bearer " + token}}
	f.owner, f.authz[owner] = b.register(t, "owner@example.com")
	f.other, f.authz[otherUser] = b.register(t, "other@example.com")
	_, f.authz[adminJWT] = b.admin(t, "admin@example.com")
	f.authz[apiKey] = b.apiKey(t, "matrix")
	return f
}

func (f *fixtures) next() int64 { return f.seq.Add(1) }

// post creates a post by the owner and returns its path.
func (f *fixtures) post(t *testing.T, published bool) string {
	t.Helper()
	p, err := store.NewPosts(f.b.db).Create(context.Background(), f.owner.ID, "Post", "Text", published)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("/api/v1/posts/%d", p.ID)
}

// order creates an order of the owner's and returns its path.
func (f *fixtures) order(t *testing.T) string {
	t.Helper()
	o, err := store.NewOrders(f.b.db).Create(context.Background(), f.owner.ID, "EUR",
		[]store.OrderItem{{SKU: "book", Quantity: 1, UnitPriceCents: 100}})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("/api/v1/orders/%d", o.ID)
}

// task enqueues a task due in an hour and returns its path.
func (f *fixtures) task(t *testing.T) string {
	t.Helper()
	var task struct {
		ID string `json:"id"`
	}
	rec := f.b.call(t, "POST", "/api/v1/tasks", "Bearer "+token,
		map[string]any{"type": "system:ping", "countdown": 3600}, &task)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("enqueue: %d %s", rec.Code, rec.Body)
	}
	return "/api/v1/tasks/" + task.ID
}

// aWorkflow is a small valid workflow whose first step is due in an hour.
func aWorkflow() map[string]any {
	return map[string]any{"steps": []map[string]any{
		{"id": "a", "type": "system:ping", "countdown": 3600},
		{"id": "b", "type": "system:ping", "after": []string{"a"}},
	}}
}

// workflow starts a workflow and returns its path.
func (f *fixtures) workflow(t *testing.T) string {
	t.Helper()
	var wf struct {
		ID string `json:"id"`
	}
	rec := f.b.call(t, "POST", "/api/v1/workflows", "Bearer "+token, aWorkflow(), &wf)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("start workflow: %d %s", rec.Code, rec.Body)
	}
	return "/api/v1/workflows/" + wf.ID
}

// schedule creates a database schedule and returns its path.
func (f *fixtures) schedule(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("matrix-%d", f.next())
	rec := f.b.call(t, "POST", "/api/v1/schedules", "Bearer "+token,
		map[string]any{"name": name, "spec": "@daily", "task_type": "system:ping"}, nil)
	if rec.Code != http.StatusCreated {
		t.Fatalf("create schedule: %d %s", rec.Code, rec.Body)
	}
	return "/api/v1/schedules/" + name
}

// statuses is one row of the matrix: the status each caller gets. The
// API_TOKEN gets what an API key gets.
type statuses struct{ anon, owner, other, admin, key int }

func (s statuses) of(who string) int {
	switch who {
	case anonymous:
		return s.anon
	case owner:
		return s.owner
	case otherUser:
		return s.other
	case adminJWT:
		return s.admin
	}
	return s.key
}

// TestPermissionMatrix sends every /api/v1 endpoint a valid request from
// each kind of caller and checks the status: who may do what. It also fails
// when an endpoint has no row, and when a status is not among the
// endpoint's documented responses.
func TestPermissionMatrix(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	published := f.post(t, true)
	draft := f.post(t, false)
	order := f.order(t)
	task := f.task(t)
	sched := f.schedule(t)
	wf := f.workflow(t)

	at := func(path string) func(*testing.T) string { return func(*testing.T) string { return path } }
	const (
		ok, created, accepted, noContent = 200, 201, 202, 204
		unauth, forbidden, notFound      = 401, 403, 404
	)
	cases := []struct {
		route string                  // as documented
		path  func(*testing.T) string // the concrete path, fresh resources made here
		body  func() any
		want  statuses
	}{
		{"GET /api/v1/openapi.json", at("/api/v1/openapi.json"), nil,
			statuses{ok, ok, ok, ok, ok}},
		{"POST /api/v1/auth/register", at("/api/v1/auth/register"),
			func() any {
				return map[string]string{"email": fmt.Sprintf("new%d@example.com", f.next()), "password": "s3cret-pass", "name": "New"}
			},
			statuses{created, created, created, created, created}},
		{"POST /api/v1/auth/login", at("/api/v1/auth/login"),
			func() any { return map[string]string{"email": "owner@example.com", "password": "s3cret-pass"} },
			statuses{ok, ok, ok, ok, ok}},
		{"GET /api/v1/auth/verify-email", at("/api/v1/auth/verify-email?token=1.2.forged"), nil,
			statuses{http.StatusUnprocessableEntity, http.StatusUnprocessableEntity, http.StatusUnprocessableEntity, http.StatusUnprocessableEntity, http.StatusUnprocessableEntity}},
		{"GET /api/v1/users/me", at("/api/v1/users/me"), nil,
			statuses{unauth, ok, ok, ok, forbidden}},
		{"GET /api/v1/users", at("/api/v1/users"), nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"GET /api/v1/users/{id}", at(fmt.Sprintf("/api/v1/users/%d", f.owner.ID)), nil,
			statuses{unauth, ok, ok, ok, ok}},

		// Posts: anyone reads published posts; drafts are the author's
		// (and admins') and a 404 to everyone else; writes are the
		// author's or an admin's, and need a user (not a service key).
		{"GET /api/v1/posts", at("/api/v1/posts"), nil,
			statuses{ok, ok, ok, ok, ok}},
		{"POST /api/v1/posts", at("/api/v1/posts"),
			func() any { return map[string]any{"title": "Hello", "content": "World"} },
			statuses{unauth, created, created, created, forbidden}},
		{"GET /api/v1/posts/{id}", at(published), nil,
			statuses{ok, ok, ok, ok, ok}},
		{"GET /api/v1/posts/{id}", at(draft), nil,
			statuses{notFound, ok, notFound, ok, ok}},
		{"PATCH /api/v1/posts/{id}", func(t *testing.T) string { return f.post(t, true) },
			func() any { return map[string]any{"title": "Changed"} },
			statuses{unauth, ok, forbidden, ok, forbidden}},
		{"PATCH /api/v1/posts/{id}", func(t *testing.T) string { return f.post(t, false) },
			func() any { return map[string]any{"title": "Changed"} },
			statuses{unauth, ok, notFound, ok, forbidden}},
		{"DELETE /api/v1/posts/{id}", func(t *testing.T) string { return f.post(t, true) }, nil,
			statuses{unauth, noContent, forbidden, noContent, forbidden}},
		{"DELETE /api/v1/posts/{id}", func(t *testing.T) string { return f.post(t, false) }, nil,
			statuses{unauth, noContent, notFound, noContent, forbidden}},
		{"POST /api/v1/posts/{id}/publish", func(t *testing.T) string { return f.post(t, false) + "/publish" }, nil,
			statuses{unauth, ok, notFound, ok, forbidden}},
		{"POST /api/v1/posts/{id}/publish", func(t *testing.T) string { return f.post(t, true) + "/publish" }, nil,
			statuses{unauth, ok, forbidden, ok, forbidden}},

		// Orders: a user's own; another user's order is a 404, not a 403.
		{"POST /api/v1/orders", at("/api/v1/orders"), func() any { return anOrder() },
			statuses{unauth, created, created, created, forbidden}},
		{"GET /api/v1/orders", at("/api/v1/orders"), nil,
			statuses{unauth, ok, ok, ok, forbidden}},
		{"GET /api/v1/orders/{id}", at(order), nil,
			statuses{unauth, ok, notFound, ok, forbidden}},

		// Operations: admin JWT, API key or API_TOKEN.
		{"POST /api/v1/tasks", at("/api/v1/tasks"),
			func() any { return map[string]any{"type": "system:ping", "countdown": 3600} },
			statuses{unauth, forbidden, forbidden, accepted, accepted}},
		{"POST /api/v1/tasks/batch", at("/api/v1/tasks/batch"),
			func() any {
				return map[string]any{"tasks": []any{map[string]any{"type": "system:ping", "countdown": 3600}}}
			},
			statuses{unauth, forbidden, forbidden, accepted, accepted}},
		{"GET /api/v1/tasks/{id}", at(task), nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"DELETE /api/v1/tasks/{id}", f.task, nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"POST /api/v1/tasks/{id}/run", func(t *testing.T) string { return f.task(t) + "/run" }, nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"GET /api/v1/queues", at("/api/v1/queues"), nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"POST /api/v1/workflows", at("/api/v1/workflows"), func() any { return aWorkflow() },
			statuses{unauth, forbidden, forbidden, accepted, accepted}},
		{"GET /api/v1/workflows", at("/api/v1/workflows"), nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"GET /api/v1/workflows/{id}", at(wf), nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"DELETE /api/v1/workflows/{id}", f.workflow, nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"GET /api/v1/task-types", at("/api/v1/task-types"), nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"GET /api/v1/task-types/{type}/limits", at("/api/v1/task-types/email:welcome/limits"), nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"PUT /api/v1/task-types/{type}/limits", at("/api/v1/task-types/email:welcome/limits"),
			func() any { return map[string]any{"rate": map[string]any{"limit": 100, "per": "1s"}} },
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"DELETE /api/v1/task-types/{type}/limits", at("/api/v1/task-types/email:welcome/limits"), nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"GET /api/v1/schedules", at("/api/v1/schedules"), nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"POST /api/v1/schedules", at("/api/v1/schedules"),
			func() any {
				return map[string]any{"name": fmt.Sprintf("new-%d", f.next()), "spec": "@hourly", "task_type": "system:ping"}
			},
			statuses{unauth, forbidden, forbidden, created, created}},
		{"GET /api/v1/schedules/{name}", at(sched), nil,
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"PATCH /api/v1/schedules/{name}", f.schedule, func() any { return map[string]any{"enabled": false} },
			statuses{unauth, forbidden, forbidden, ok, ok}},
		{"DELETE /api/v1/schedules/{name}", f.schedule, nil,
			statuses{unauth, forbidden, forbidden, noContent, noContent}},
		{"POST /api/v1/schedules/{name}/fire", func(t *testing.T) string { return f.schedule(t) + "/fire" }, nil,
			statuses{unauth, forbidden, forbidden, accepted, accepted}},
	}

	// Every /api/v1 route has a row.
	covered := map[string]bool{}
	for _, tc := range cases {
		covered[tc.route] = true
	}
	for _, r := range apiRoutes(t, b.srv) {
		if _, path, _ := strings.Cut(r, " "); strings.HasPrefix(path, "/api/v1/") && !covered[r] {
			t.Errorf("%s has no row in the permission matrix", r)
		}
	}

	doc := fetchOpenAPI(t, b)
	for i, tc := range cases {
		for _, who := range principals {
			t.Run(fmt.Sprintf("%s#%d/%s", tc.route, i, who), func(t *testing.T) {
				t.Parallel()
				method, _, _ := strings.Cut(tc.route, " ")
				var body any
				if tc.body != nil {
					body = tc.body()
				}
				path := tc.path(t)
				rec := b.call(t, method, path, f.authz[who], body, nil)
				want := tc.want.of(who)
				if rec.Code != want {
					t.Fatalf("%s %s as %s: %d, want %d: %s", method, path, who, rec.Code, want, rec.Body)
				}
				if want == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
				op, _ := doc.operation(tc.route)
				if _, documented := op.Responses[fmt.Sprint(rec.Code)]; !documented {
					t.Errorf("%s answers %d, which openapi.json does not document (it lists %v)",
						tc.route, rec.Code, slices.Sorted(maps.Keys(op.Responses)))
				}
			})
		}
	}
}

// TestUnknownAPIPathOrMethodForEveryone: a path under /api/v1 that no route
// serves is a 404 and a method a path does not serve is a 405, whoever asks.
// (The auth middleware once sat on a route group, whose catch-all then
// answered 401 or "admin only" 403 to unknown paths, and 404 to bad methods.)
func TestUnknownAPIPathOrMethodForEveryone(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	for _, who := range principals {
		for _, path := range []string{"/api/v1/nothing", "/api/v1/posts/1/nothing", "/api/v1", "/api/v1/"} {
			var e errorBody
			if rec := b.call(t, "GET", path, f.authz[who], nil, &e); rec.Code != http.StatusNotFound || e.Error.Code != "not_found" {
				t.Errorf("GET %s as %s: %d %s, want 404", path, who, rec.Code, rec.Body)
			}
		}
	}
	// No route, no authentication: a stale credential on an unknown path is
	// still a 404 (on a real route it is a 401, see the matrix).
	if rec := b.call(t, "GET", "/api/v1/nothing", "Bearer stale", nil, nil); rec.Code != http.StatusNotFound {
		t.Errorf("bad token on an unknown path: %d", rec.Code)
	}
	// A known path with a method it does not serve: 405, for everyone.
	for _, who := range principals {
		for _, r := range []struct{ method, path string }{
			{"PUT", "/api/v1/posts/1"}, {"DELETE", "/api/v1/users/me"}, {"GET", "/api/v1/auth/login"}, {"PUT", "/api/v1/tasks/x"},
		} {
			var e errorBody
			if rec := b.call(t, r.method, r.path, f.authz[who], nil, &e); rec.Code != http.StatusMethodNotAllowed || e.Error.Code != "method_not_allowed" {
				t.Errorf("%s %s as %s: %d %s, want 405", r.method, r.path, who, rec.Code, rec.Body)
			}
		}
	}
}

// TestOrderOfAnotherUserLooksNonexistent: another user's order and an
// order that does not exist get the same 404, so IDs reveal nothing; a
// draft post likewise.
func TestOrderOfAnotherUserLooksNonexistent(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	for _, tc := range []struct{ theirs, missing string }{
		{f.order(t), "/api/v1/orders/999999"},
		{f.post(t, false), "/api/v1/posts/999999"},
	} {
		a := b.call(t, "GET", tc.theirs, f.authz[otherUser], nil, nil)
		m := b.call(t, "GET", tc.missing, f.authz[otherUser], nil, nil)
		if a.Code != http.StatusNotFound || a.Code != m.Code || a.Body.String() != m.Body.String() {
			t.Errorf("someone else's %s: %d %s; missing: %d %s", tc.theirs, a.Code, a.Body, m.Code, m.Body)
		}
	}
}
