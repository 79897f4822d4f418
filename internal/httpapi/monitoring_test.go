package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// opsBundle is an API server with the dashboard mounted for alice (full
// access) and bob (read-only), over a Redis DB of its own.
type opsBundle struct {
	srv http.Handler
	q   *queue.Client
}

const (
	alicePassword = "alice-password"
	bobPassword   = "bob-password"
)

func setupOps(t *testing.T, users bool) *opsBundle {
	t.Helper()
	d, _ := testenv.DB(t)
	redisURL, _ := testenv.Redis(t)
	queues, _ := config.ParseQueues(config.DefaultQueues)
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })

	opts := httpapi.Options{APIToken: token, BodyLimit: 1 << 20}
	deps := httpapi.Deps{Log: testenv.Logger(t), DB: d, Queue: q}
	if users {
		opts.MonitorUsers = []config.MonitorUser{
			{Name: "alice", Hash: bcryptHash(t, alicePassword)},
			{Name: "bob", Hash: bcryptHash(t, bobPassword), ReadOnly: true},
		}
		deps.Monitor = &httpapi.Monitor{
			ReadWrite: newMonitor(t, redisURL, false),
			ReadOnly:  newMonitor(t, redisURL, true),
		}
	}
	return &opsBundle{srv: httpapi.NewServer(opts, deps), q: q}
}

func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func newMonitor(t *testing.T, redisURL string, readOnly bool) queue.Monitor {
	t.Helper()
	m, err := queue.NewMonitor(redisURL, queue.MonitorOptions{RootPath: httpapi.MonitorPath, ReadOnly: readOnly})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// asUser sends a request with basic credentials (none if user is empty).
func (b *opsBundle) asUser(method, path, user, password string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, nil)
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	return rec
}

func (b *opsBundle) enqueuePing(t *testing.T) string {
	t.Helper()
	info, err := b.q.Enqueue(context.Background(), queue.Request{Type: tasks.TypeSystemPing, Payload: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	return info.ID
}

func TestMonitoringIsOffWithoutUsers(t *testing.T) {
	t.Parallel()
	b := setupOps(t, false)
	for _, path := range []string{"/monitoring", "/monitoring/", "/monitoring/api/queues"} {
		if rec := b.asUser(http.MethodGet, path, "alice", alicePassword); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s without MONITOR_USERS: %d, want 404", path, rec.Code)
		}
	}
}

func TestMonitoringBasicAuth(t *testing.T) {
	t.Parallel()
	b := setupOps(t, true)
	b.enqueuePing(t)

	cases := []struct {
		name, user, password string
		status               int
	}{
		{"no credentials", "", "", http.StatusUnauthorized},
		{"wrong password", "alice", "nope", http.StatusUnauthorized},
		{"another user's password", "alice", bobPassword, http.StatusUnauthorized},
		{"unknown user", "mallory", alicePassword, http.StatusUnauthorized},
		{"alice", "alice", alicePassword, http.StatusOK},
		{"alice again (remembered)", "alice", alicePassword, http.StatusOK},
		{"bob reads", "bob", bobPassword, http.StatusOK},
	}
	for _, c := range cases {
		rec := b.asUser(http.MethodGet, "/monitoring/api/queues", c.user, c.password)
		if rec.Code != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, rec.Code, c.status, rec.Body)
			continue
		}
		if c.status == http.StatusUnauthorized {
			if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
				t.Errorf("%s: WWW-Authenticate = %q, want a Basic challenge", c.name, got)
			}
			continue
		}
		var body struct {
			Queues []struct {
				Queue   string `json:"queue"`
				Pending int    `json:"pending"`
			} `json:"queues"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %v: %s", c.name, err, rec.Body)
		}
		if len(body.Queues) != 1 || body.Queues[0].Queue != "default" || body.Queues[0].Pending != 1 {
			t.Errorf("%s: queues = %+v, want default with 1 pending", c.name, body.Queues)
		}
	}

	if rec := b.asUser(http.MethodGet, "/monitoring", "alice", alicePassword); rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != "/monitoring/" {
		t.Errorf("GET /monitoring: %d to %q, want 301 to /monitoring/", rec.Code, rec.Header().Get("Location"))
	}
	rec := b.asUser(http.MethodGet, "/monitoring/", "alice", alicePassword)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "<title>Asynq - Monitoring</title>") {
		t.Errorf("GET /monitoring/: %d, want the dashboard's page: %.200s", rec.Code, rec.Body)
	}
}

func TestMonitoringReadOnlyIsEnforcedServerSide(t *testing.T) {
	t.Parallel()
	b := setupOps(t, true)
	id := b.enqueuePing(t)
	del := "/monitoring/api/queues/default/pending_tasks/" + id

	// bob's write requests are refused whatever the method, before Asynqmon.
	for _, method := range []string{http.MethodDelete, http.MethodPost, http.MethodPut, http.MethodPatch} {
		rec := b.asUser(method, del, "bob", bobPassword)
		if rec.Code != http.StatusForbidden {
			t.Errorf("bob %s: %d, want 403: %s", method, rec.Code, rec.Body)
		}
	}
	if rec := b.asUser(http.MethodPost, "/monitoring/api/queues/default:pause", "bob", bobPassword); rec.Code != http.StatusForbidden {
		t.Errorf("bob pauses the queue: %d, want 403", rec.Code)
	}
	if _, err := b.q.GetTask(context.Background(), id, "default"); err != nil {
		t.Fatalf("bob's delete went through: %v", err)
	}
	// The read-only UI is served to bob (Asynqmon's own read-only mode).
	if rec := b.asUser(http.MethodGet, "/monitoring/", "bob", bobPassword); !strings.Contains(rec.Body.String(), `FLAG_READ_ONLY="true"`) {
		t.Errorf("bob's dashboard page is not in read-only mode")
	}
	if rec := b.asUser(http.MethodGet, "/monitoring/", "alice", alicePassword); !strings.Contains(rec.Body.String(), `FLAG_READ_ONLY="false"`) {
		t.Errorf("alice's dashboard page is in read-only mode")
	}

	// alice may delete.
	if rec := b.asUser(http.MethodDelete, del, "alice", alicePassword); rec.Code/100 != 2 {
		t.Fatalf("alice DELETE: %d: %s", rec.Code, rec.Body)
	}
	if _, err := b.q.GetTask(context.Background(), id, "default"); err == nil {
		t.Error("alice's delete did not remove the task")
	}
}

// The dashboard's basic credentials are ambient: a browser that has logged
// in sends them with any request to the site, including a form another site
// posts. Cross-site writes are refused, so a page elsewhere cannot pause
// queues or archive tasks with alice's session.
func TestMonitoringRefusesCrossSiteWrites(t *testing.T) {
	t.Parallel()
	b := setupOps(t, true)
	b.enqueuePing(t)
	const pause = "/monitoring/api/queues/default:pause"
	send := func(path string, header ...string) int {
		req := httptest.NewRequest(http.MethodPost, path, nil)
		req.SetBasicAuth("alice", alicePassword)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		rec := httptest.NewRecorder()
		b.srv.ServeHTTP(rec, req)
		return rec.Code
	}
	paused := func() bool {
		t.Helper()
		rec := b.asUser(http.MethodGet, "/monitoring/api/queues/default", "alice", alicePassword)
		var body struct {
			Current struct {
				Paused bool `json:"paused"`
			} `json:"current"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("queue info: %d %v: %s", rec.Code, err, rec.Body)
		}
		return body.Current.Paused
	}

	if code := send(pause, "Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"); code != http.StatusForbidden {
		t.Errorf("cross-site form post: %d, want 403", code)
	}
	if code := send(pause, "Origin", "https://evil.example"); code != http.StatusForbidden {
		t.Errorf("post from another origin (no Sec-Fetch-Site): %d, want 403", code)
	}
	if paused() {
		t.Fatal("a cross-site request paused the queue")
	}
	// The dashboard's own requests, and clients that are not browsers, work.
	if code := send(pause, "Sec-Fetch-Site", "same-origin", "Origin", "http://example.com"); code/100 != 2 {
		t.Errorf("same-origin post: %d, want 2xx", code)
	}
	if !paused() {
		t.Fatal("the same-origin request did not pause the queue")
	}
	if code := send("/monitoring/api/queues/default:resume"); code/100 != 2 {
		t.Errorf("post without browser headers: %d, want 2xx", code)
	}
	if paused() {
		t.Fatal("the request without browser headers did not resume the queue")
	}
}
