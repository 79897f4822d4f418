package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// TestUserPostCount: GET /users/{id}, /users/me and /users show each user's
// number of posts (drafts only to their author and admins) and follow
// creates and deletes.
func TestUserPostCount(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	create := func(authz string, published bool) int64 {
		var p struct {
			ID int64 `json:"id"`
		}
		rec := b.call(t, "POST", "/api/v1/posts", authz, map[string]any{"title": "T", "published": published}, &p)
		if rec.Code != http.StatusCreated {
			t.Fatalf("create post: %d %s", rec.Code, rec.Body)
		}
		return p.ID
	}
	create(f.authz[owner], true)
	create(f.authz[owner], true)
	draft := create(f.authz[owner], false)
	create(f.authz[otherUser], true)

	counts := func() map[int64]int64 {
		t.Helper()
		var list struct {
			Data []userJSON `json:"data"`
		}
		if rec := b.call(t, "GET", "/api/v1/users", f.authz[adminJWT], nil, &list); rec.Code != http.StatusOK {
			t.Fatalf("list users: %d %s", rec.Code, rec.Body)
		}
		out := map[int64]int64{}
		for _, u := range list.Data {
			out[u.ID] = u.PostCount
		}
		return out
	}
	// check: the author themself and admins count drafts (full); other
	// users see the published count only, so drafts stay private.
	check := func(id int64, self string, full, published int64) {
		t.Helper()
		for _, who := range []string{owner, otherUser, adminJWT, apiKey} {
			want := published
			if who == self || who == adminJWT || who == apiKey {
				want = full
			}
			var u userJSON
			if rec := b.call(t, "GET", fmt.Sprintf("/api/v1/users/%d", id), f.authz[who], nil, &u); rec.Code != http.StatusOK || u.PostCount != want {
				t.Fatalf("user %d as %s: %d %s, want post_count %d", id, who, rec.Code, rec.Body, want)
			}
		}
		if got := counts()[id]; got != full {
			t.Fatalf("GET /users: user %d has post_count %d, want %d", id, got, full)
		}
	}
	check(f.owner.ID, owner, 3, 2)
	check(f.other.ID, otherUser, 1, 1)
	var me userJSON
	if rec := b.call(t, "GET", "/api/v1/users/me", f.authz[owner], nil, &me); rec.Code != http.StatusOK || me.PostCount != 3 || me.ID != f.owner.ID {
		t.Fatalf("me: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "DELETE", fmt.Sprintf("/api/v1/posts/%d", draft), f.authz[owner], nil, nil); rec.Code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	check(f.owner.ID, owner, 2, 2)
	check(f.other.ID, otherUser, 1, 1)
	for id, n := range counts() {
		if id != f.owner.ID && id != f.other.ID && n != 0 {
			t.Fatalf("user %d without posts has post_count %d", id, n)
		}
	}
}

// TestUserGetShowsPrivateFieldsToSelfAndAdmins: email and role are shown
// to the user themself and to admins; other users see the public profile.
func TestUserGetShowsPrivateFieldsToSelfAndAdmins(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	path := fmt.Sprintf("/api/v1/users/%d", f.owner.ID)
	for _, tc := range []struct {
		who  string
		full bool
	}{{owner, true}, {adminJWT, true}, {apiKey, true}, {bootstrap, true}, {otherUser, false}} {
		var u map[string]any
		rec := b.call(t, "GET", path, f.authz[tc.who], nil, &u)
		if rec.Code != http.StatusOK || u["id"] != float64(f.owner.ID) || u["name"] != f.owner.Name {
			t.Fatalf("as %s: %d %s", tc.who, rec.Code, rec.Body)
		}
		for _, k := range []string{"post_count", "created_at"} {
			if _, ok := u[k]; !ok {
				t.Errorf("as %s: no %q in %s", tc.who, k, rec.Body)
			}
		}
		_, hasEmail := u["email"]
		_, hasRole := u["role"]
		if hasEmail != tc.full || hasRole != tc.full {
			t.Errorf("as %s: email/role shown = %v/%v, want %v: %s", tc.who, hasEmail, hasRole, tc.full, rec.Body)
		}
	}
	for _, p := range []string{"/api/v1/users/999999", "/api/v1/users/0", "/api/v1/users/-1", "/api/v1/users/abc"} {
		var e errorBody
		if rec := b.call(t, "GET", p, f.authz[adminJWT], nil, &e); rec.Code != http.StatusNotFound || e.Error.Code != "not_found" {
			t.Errorf("GET %s: %d %s, want 404", p, rec.Code, rec.Body)
		}
	}
}

// TestRegisterEnqueuesWelcomeEmail: registering commits an email:welcome
// outbox row with the user's ID and the request's ID; the relay enqueues it
// under the row's ID on the critical queue.
func TestRegisterEnqueuesWelcomeEmail(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupFull(t)
	var u userJSON
	rec := b.call(t, "POST", "/api/v1/auth/register", "",
		map[string]string{"email": "welcome@example.com", "password": "s3cret-pass", "name": "W"}, &u, "X-Request-ID", "reg-42")
	if rec.Code != http.StatusCreated || u.ID == 0 {
		t.Fatalf("register: %d %s", rec.Code, rec.Body)
	}

	// Look at the row without consuming it: TakeDue takes rows in a transaction
	// that is rolled back.
	var rows []store.OutboxEntry
	err := db.InTx(ctx, b.db, func(tx *sqlx.Tx) error {
		var err error
		rows, err = store.NewOutbox(tx).TakeDue(ctx, 10, 0)
		if err == nil {
			err = errRollback
		}
		return err
	})
	if err != errRollback {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].TaskType != tasks.TypeEmailWelcome || rows[0].RequestID != "reg-42" {
		t.Fatalf("outbox after register = %+v", rows)
	}
	var p tasks.EmailWelcomePayload
	if err := json.Unmarshal(rows[0].Payload, &p); err != nil || p.UserID != u.ID {
		t.Fatalf("welcome payload %s, want user_id %d", rows[0].Payload, u.ID)
	}

	relay := queue.NewRelay(b.db, b.q, testenv.Logger(t), queue.RelayOptions{})
	if n, failed, err := relay.RelayOnce(ctx); err != nil || n != 1 || failed != 0 {
		t.Fatalf("relay: %d sent, %d failed, %v", n, failed, err)
	}
	var task struct {
		Type  string `json:"type"`
		Queue string `json:"queue"`
	}
	if rec := b.call(t, "GET", "/api/v1/tasks/"+rows[0].ID, "Bearer "+token, nil, &task); rec.Code != http.StatusOK ||
		task.Type != tasks.TypeEmailWelcome || task.Queue != "critical" {
		t.Fatalf("welcome task: %d %s", rec.Code, rec.Body)
	}
}

var errRollback = fmt.Errorf("rollback")

// TestRegisterValidation: every invalid registration is a 422 naming each
// bad field (or 409 for a taken email) and writes neither a user nor an
// outbox row.
func TestRegisterValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupFull(t)
	b.register(t, "taken@example.com")
	long := func(n int) string { return strings.Repeat("x", n) }
	valid := func(change map[string]any) map[string]any {
		m := map[string]any{"email": "new@example.com", "password": "s3cret-pass", "name": "New"}
		for k, v := range change {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	cases := []struct {
		name   string
		body   any
		status int
		fields []string
	}{
		{"empty object", map[string]any{}, 422, []string{"email", "password", "name"}},
		{"no email", valid(map[string]any{"email": nil}), 422, []string{"email"}},
		{"email without @", valid(map[string]any{"email": "not-an-email"}), 422, []string{"email"}},
		{"email without domain", valid(map[string]any{"email": "a@"}), 422, []string{"email"}},
		{"email without local part", valid(map[string]any{"email": "@example.com"}), 422, []string{"email"}},
		{"email with space", valid(map[string]any{"email": "a b@example.com"}), 422, []string{"email"}},
		{"email too long", valid(map[string]any{"email": long(250) + "@example.com"}), 422, []string{"email"}},
		{"password 7 characters", valid(map[string]any{"password": "1234567"}), 422, []string{"password"}},
		{"password over bcrypt's 72 bytes", valid(map[string]any{"password": long(73)}), 422, []string{"password"}},
		{"password over 72 bytes in 40 characters", valid(map[string]any{"password": strings.Repeat("é", 40)}), 422, []string{"password"}},
		{"no password", valid(map[string]any{"password": nil}), 422, []string{"password"}},
		{"blank name", valid(map[string]any{"name": "   "}), 422, []string{"name"}},
		{"name too long", valid(map[string]any{"name": long(101)}), 422, []string{"name"}},
		{"password a number", valid(map[string]any{"password": 12345678}), 422, []string{"password"}},
		{"role smuggled in", valid(map[string]any{"role": "admin"}), 422, []string{"role"}},
		{"taken email", valid(map[string]any{"email": "taken@example.com"}), 409, nil},
		{"taken email, other case", valid(map[string]any{"email": "Taken@EXAMPLE.com"}), 409, nil},
		{"taken email, padded", valid(map[string]any{"email": "  taken@example.com "}), 409, nil},
		{"malformed JSON", `{"email":"a@example.com",`, 400, nil},
	}
	for _, tc := range cases {
		var e errorBody
		rec := b.call(t, "POST", "/api/v1/auth/register", "", tc.body, &e)
		if rec.Code != tc.status || len(e.Error.Fields) != len(tc.fields) {
			t.Errorf("%s: %d %s, want %d naming %v", tc.name, rec.Code, rec.Body, tc.status, tc.fields)
			continue
		}
		for _, name := range tc.fields {
			if e.Error.Fields[name] == "" {
				t.Errorf("%s: fields %v do not name %q", tc.name, e.Error.Fields, name)
			}
		}
		if tc.status == 409 && e.Error.Code != "conflict" {
			t.Errorf("%s: code %q, want conflict", tc.name, e.Error.Code)
		}
	}
	if _, total, err := store.NewUsers(b.db).List(ctx, store.Page{Limit: 10}); err != nil || total != 1 {
		t.Fatalf("users after invalid registrations: %d, %v; want only the first", total, err)
	}
	if st, err := store.NewOutbox(b.db).Stats(ctx); err != nil || st.Pending != 1 {
		t.Fatalf("outbox after invalid registrations: %+v, %v; want one welcome", st, err)
	}
	// The boundary values are accepted.
	for i, change := range []map[string]any{
		{"password": "12345678", "name": long(100)},
		{"password": strings.Repeat("é", 36)}, // 72 bytes
		{"password": long(72)},
	} {
		change["email"] = fmt.Sprintf("edge%d@example.com", i)
		if rec := b.call(t, "POST", "/api/v1/auth/register", "", valid(change), nil); rec.Code != http.StatusCreated {
			t.Errorf("%v: %d %s", change, rec.Code, rec.Body)
		}
	}
}

// TestPasswordHashNeverInResponses collects every response that shows a
// user and checks that neither the password nor its hash is in any of them.
func TestPasswordHashNeverInResponses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupFull(t)
	f := newFixtures(t, b)
	stored, err := store.NewUsers(b.db).GetByEmail(ctx, "owner@example.com")
	if err != nil || stored.PasswordHash == "" {
		t.Fatalf("stored user: %v", err)
	}
	var bodies []string
	add := func(method, path, authz string, body any) {
		rec := b.call(t, method, path, authz, body, nil)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d", method, path, rec.Code)
		}
		bodies = append(bodies, rec.Body.String())
	}
	add("POST", "/api/v1/auth/register", "", map[string]string{"email": "fresh@example.com", "password": "s3cret-pass", "name": "F"})
	add("POST", "/api/v1/auth/register", "", map[string]string{"email": "owner@example.com", "password": "s3cret-pass", "name": "Dup"})
	add("POST", "/api/v1/auth/login", "", map[string]string{"email": "owner@example.com", "password": "s3cret-pass"})
	add("POST", "/api/v1/auth/login", "", map[string]string{"email": "owner@example.com", "password": "wrong-pass"})
	for _, who := range principals {
		add("GET", "/api/v1/users/me", f.authz[who], nil)
		add("GET", fmt.Sprintf("/api/v1/users/%d", f.owner.ID), f.authz[who], nil)
		add("GET", "/api/v1/users?limit=100", f.authz[who], nil)
	}
	for _, body := range bodies {
		for _, secret := range []string{stored.PasswordHash, `"password`, "s3cret-pass", "$2a$", "$2b$"} {
			if strings.Contains(body, secret) {
				t.Fatalf("a response contains %q: %s", secret, body)
			}
		}
	}
}
