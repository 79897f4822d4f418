package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

const adminTestSecret = "0123456789abcdef0123456789abcdef"

// adminBundle is a database of its own, the env the admin commands read,
// and the API served over the same database.
type adminBundle struct {
	db  *sqlx.DB
	env map[string]string
	srv http.Handler
}

func setupAdmin(t *testing.T) *adminBundle {
	t.Helper()
	d, dbURL := testenv.DB(t)
	redisURL, _ := testenv.Redis(t)
	queues, _ := config.ParseQueues(config.DefaultQueues)
	q, err := queue.NewClient(redisURL, tasks.All(), queues)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	srv := httpapi.NewServer(httpapi.Options{BodyLimit: 1 << 16},
		httpapi.Deps{Log: testenv.Logger(t), DB: d, Queue: q, Tokens: auth.NewTokens([]byte(adminTestSecret), time.Hour)})
	// The admin commands use only the database: no REDIS_URL.
	env := map[string]string{"DATABASE_URL": dbURL}
	return &adminBundle{db: d, env: env, srv: srv}
}

// run runs `api args…` with the bundle's env plus extra (KEY=VALUE).
func (b *adminBundle) run(args []string, extra ...string) (string, error) {
	env := map[string]string{}
	for k, v := range b.env {
		env[k] = v
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"api"}, args...), func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), err
}

func (b *adminBundle) call(t *testing.T, method, path, authz, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", authz)
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	return rec
}

func (b *adminBundle) login(t *testing.T, email, password string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	req := httptest.NewRequest("POST", "/api/v1/auth/login", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	b.srv.ServeHTTP(rec, req)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &tok); rec.Code != http.StatusOK || err != nil {
		t.Fatalf("login %s: %d %s", email, rec.Code, rec.Body)
	}
	return "Bearer " + tok.AccessToken
}

// TestCreateUser: `api createuser` makes a user or an admin whose password
// (from --password-env or stdin) logs in, and an admin may use the task
// endpoints.
func TestCreateUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAdmin(t)

	out, err := b.run([]string{"createuser", "--email", "root@example.com", "--name", "Root", "--admin", "--password-env", "ROOT_PW"},
		"ROOT_PW=correct horse battery")
	if err != nil || !strings.Contains(out, "<root@example.com>") || !strings.Contains(out, "role admin") {
		t.Fatalf("createuser --admin: %q, %v", out, err)
	}
	if strings.Contains(out, "correct horse") {
		t.Fatalf("the password was printed: %q", out)
	}
	u, err := store.NewUsers(b.db).GetByEmail(ctx, "root@example.com")
	if err != nil || u.Role != store.RoleAdmin || u.Name != "Root" || auth.CheckPassword(u.PasswordHash, "correct horse battery") != nil {
		t.Fatalf("stored admin: %+v, %v", u, err)
	}
	admin := b.login(t, "root@example.com", "correct horse battery")
	if rec := b.call(t, "POST", "/api/v1/tasks", admin, `{"type":"system:ping"}`); rec.Code != http.StatusAccepted {
		t.Fatalf("admin enqueue: %d %s", rec.Code, rec.Body)
	}

	// Without --admin: a plain user, refused on the task endpoints. The
	// password comes from stdin (run reads os.Stdin; runAdmin takes it).
	var buf bytes.Buffer
	getenv := func(k string) string { return b.env[k] }
	if err := runAdmin(ctx, "createuser", []string{"--email", "joe@example.com", "--name", "Joe"}, getenv,
		strings.NewReader("stdin-pass-123\r\nignored second line\n"), &buf); err != nil || !strings.Contains(buf.String(), "role user") {
		t.Fatalf("createuser from stdin: %q, %v", buf.String(), err)
	}
	user := b.login(t, "joe@example.com", "stdin-pass-123")
	if rec := b.call(t, "POST", "/api/v1/tasks", user, `{"type":"system:ping"}`); rec.Code != http.StatusForbidden {
		t.Fatalf("user enqueue: %d %s", rec.Code, rec.Body)
	}
	buf.Reset()
	if err := runAdmin(ctx, "createuser", []string{"--email", "last@example.com", "--name", "Last"}, getenv,
		strings.NewReader("no-newline-pass"), &buf); err != nil {
		t.Fatalf("password without a newline at EOF: %v", err)
	}
	b.login(t, "last@example.com", "no-newline-pass")
}

// TestCreateUserRefuses: bad flags, passwords and duplicates are errors
// that say what is wrong, and create nothing.
func TestCreateUserRefuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAdmin(t)
	if _, err := b.run([]string{"createuser", "--email", "taken@example.com", "--name", "T", "--password-env", "PW"}, "PW=long-enough-1"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		args  []string
		extra []string
		want  string
	}{
		{"no email", []string{"createuser", "--name", "A", "--password-env", "PW"}, []string{"PW=long-enough-1"}, "--email"},
		{"email without @", []string{"createuser", "--email", "nobody", "--name", "A", "--password-env", "PW"}, []string{"PW=long-enough-1"}, "--email"},
		{"email without domain", []string{"createuser", "--email", "nobody@", "--name", "A", "--password-env", "PW"}, []string{"PW=long-enough-1"}, "--email"},
		{"email with spaces", []string{"createuser", "--email", "no body@example.com", "--name", "A", "--password-env", "PW"}, []string{"PW=long-enough-1"}, "--email"},
		{"no name", []string{"createuser", "--email", "a@example.com", "--password-env", "PW"}, []string{"PW=long-enough-1"}, "--name"},
		{"blank name", []string{"createuser", "--email", "a@example.com", "--name", "  ", "--password-env", "PW"}, []string{"PW=long-enough-1"}, "--name"},
		{"short password", []string{"createuser", "--email", "a@example.com", "--name", "A", "--password-env", "PW"}, []string{"PW=short"}, "password"},
		{"unset password variable", []string{"createuser", "--email", "a@example.com", "--name", "A", "--password-env", "UNSET"}, nil, "password"},
		{"password over 72 bytes", []string{"createuser", "--email", "a@example.com", "--name", "A", "--password-env", "PW"}, []string{"PW=" + strings.Repeat("é", 37)}, "password"},
		{"taken email", []string{"createuser", "--email", "taken@example.com", "--name", "T", "--password-env", "PW"}, []string{"PW=long-enough-1"}, "already has an account"},
		{"taken email, other case", []string{"createuser", "--email", "TAKEN@example.com", "--name", "T", "--password-env", "PW"}, []string{"PW=long-enough-1"}, "already has an account"},
		{"unknown flag", []string{"createuser", "--email", "a@example.com", "--name", "A", "--superuser"}, nil, "superuser"},
		{"no database", []string{"createuser", "--email", "a@example.com", "--name", "A", "--password-env", "PW"}, []string{"PW=long-enough-1", "DATABASE_URL="}, "DATABASE_URL"},
	}
	for _, tc := range cases {
		out, err := b.run(tc.args, tc.extra...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v (out %q), want it to mention %q", tc.name, err, out, tc.want)
		}
	}
	// Empty stdin is a too-short password, not a passwordless account.
	if err := runAdmin(ctx, "createuser", []string{"--email", "b@example.com", "--name", "B"},
		func(k string) string { return b.env[k] }, strings.NewReader(""), &bytes.Buffer{}); err == nil {
		t.Error("empty stdin: no error")
	}
	if _, total, err := store.NewUsers(b.db).List(ctx, store.Page{Limit: 10}); err != nil || total != 1 {
		t.Fatalf("users after refused commands: %d, %v; want 1", total, err)
	}
}

// TestCreateKey: `api createkey` prints a new key once, stores only its
// hash, and the key acts as admin on the task endpoints (not as a user).
func TestCreateKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAdmin(t)
	out, err := b.run([]string{"createkey", "--name", "ci"})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	key := strings.TrimSpace(lines[len(lines)-1])
	if !strings.HasPrefix(key, auth.APIKeyPrefix) || len(key) < len(auth.APIKeyPrefix)+20 || !strings.Contains(out, `"ci"`) {
		t.Fatalf("createkey output %q", out)
	}
	if strings.Count(out, key) != 1 {
		t.Fatalf("the key is printed %d times", strings.Count(out, key))
	}

	// Only the hash is stored: no column of any row holds the key.
	var leaks int
	if err := b.db.GetContext(ctx, &leaks, `SELECT count(*) FROM api_keys k WHERE strpos(k::text, $1) > 0`, key); err != nil || leaks != 0 {
		t.Fatalf("rows holding the key: %d, %v", leaks, err)
	}
	if k, err := store.NewAPIKeys(b.db).ByHash(ctx, auth.HashAPIKey(key)); err != nil || k.Name != "ci" || k.KeyHash == key {
		t.Fatalf("stored key: %+v, %v", k, err)
	}

	authz := "Bearer " + key
	if rec := b.call(t, "POST", "/api/v1/tasks", authz, `{"type":"system:ping"}`); rec.Code != http.StatusAccepted {
		t.Fatalf("enqueue with the key: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "GET", "/api/v1/queues", authz, ""); rec.Code != http.StatusOK {
		t.Fatalf("queues with the key: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "GET", "/api/v1/users/me", authz, ""); rec.Code != http.StatusForbidden {
		t.Fatalf("users/me with the key: %d %s", rec.Code, rec.Body)
	}
	// A key one character off is refused.
	if rec := b.call(t, "GET", "/api/v1/queues", authz[:len(authz)-1]+"x", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("altered key: %d", rec.Code)
	}

	// A second key is a different secret; names are unique and required.
	out2, err := b.run([]string{"createkey", "--name", "billing"})
	if err != nil || strings.Contains(out2, key) {
		t.Fatalf("second key: %q, %v", out2, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"createkey", "--name", "ci"}, "already exists"},
		{[]string{"createkey"}, "--name"},
		{[]string{"createkey", "--name", " "}, "--name"},
		{[]string{"createkey", "--name", "API_TOKEN"}, "lower-case"},
		{[]string{"createkey", "--name", "billing service"}, "lower-case"},
		{[]string{"createkey", "--name", "-x"}, "lower-case"},
	} {
		if out, err := b.run(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(out, auth.APIKeyPrefix) {
			t.Errorf("%v: %q, %v; want an error mentioning %q and no key", tc.args, out, err, tc.want)
		}
	}
}
