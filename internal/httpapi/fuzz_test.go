package httpapi_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Fuzz targets, one per family of JSON endpoints. Each sends what the
// fuzzer makes up to the real server (real PostgreSQL and Redis) and checks
// the two promises of the error contract: never a 5xx, and nothing
// half-written (a refused request leaves every table as it was; an accepted
// one writes all it should). `go test` runs the seeds; CI fuzzes each target
// for a few seconds (deploy/local/test.sh, FUZZ_TIME).

// tables counts the rows a request of the family may write.
func tables(t testing.TB, b *inputBundle, names ...string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, n := range names {
		out[n] = count(t, b.db, n)
	}
	return out
}

// checkWrites fails unless the rows moved by exactly want (all zero when
// the request was refused).
func checkWrites(t *testing.T, before, after map[string]int, want map[string]int, what string) {
	t.Helper()
	for table, n := range before {
		if after[table]-n != want[table] {
			t.Fatalf("%s: %s went from %d to %d rows, want +%d", what, table, n, after[table], want[table])
		}
	}
}

func no5xx(t *testing.T, code int, what string, body string) {
	t.Helper()
	if code >= 500 {
		t.Fatalf("%s: %d %s", what, code, body)
	}
}

func FuzzAuth(f *testing.F) {
	for _, s := range []string{
		`{"email":"a@example.com","password":"long-enough","name":"A"}`,
		`{"email":"a@example.com","password":"x"}`,
		`{"email":"\u0000@example.com","password":"long-enough","name":"A"}`,
		`{"email":"a@example.com","password":"` + strings.Repeat("p", 80) + `","name":"A"}`,
		`{"email":1,"password":[],"name":{}}`,
		`{"email":"a@example.com","password":"long-enough","name":"A","role":"admin"}`,
		`[]`, `null`, `{"email":`, `{}{}`,
	} {
		f.Add(s)
	}
	b := setupInput(f)
	f.Fuzz(func(t *testing.T, body string) {
		before := tables(t, b, "users", "outbox")
		rec := b.call(t, "POST", "/api/v1/auth/register", "", body, nil)
		no5xx(t, rec.Code, "register", rec.Body.String())
		want := map[string]int{}
		if rec.Code == http.StatusCreated {
			want = map[string]int{"users": 1, "outbox": 1} // the user and its welcome email
		}
		checkWrites(t, before, tables(t, b, "users", "outbox"), want, "register "+body)
		rec = b.call(t, "POST", "/api/v1/auth/login", "", body, nil)
		no5xx(t, rec.Code, "login", rec.Body.String())
	})
}

func FuzzPosts(f *testing.F) {
	for _, s := range []string{
		`{"title":"t","content":"c","published":true}`,
		`{"title":"","content":"c"}`,
		`{"title":"t\u0000"}`,
		`{"title":"t","published":"yes"}`,
		`{"title":null,"content":null,"published":null}`,
	} {
		f.Add(s, "author_id=1&skip=0&limit=10")
	}
	f.Add(`{}`, "author_id=2147483648&skip=9223372036854775807")
	f.Add(`{}`, "limit=-1&skip=x%00")
	b := setupInput(f)
	var post struct {
		ID int64 `json:"id"`
	}
	if rec := b.call(f, "POST", "/api/v1/posts", b.user, `{"title":"fixture","content":"c"}`, &post); rec.Code != http.StatusCreated {
		f.Fatalf("fixture post: %d %s", rec.Code, rec.Body)
	}
	f.Fuzz(func(t *testing.T, body, query string) {
		before := tables(t, b, "posts")
		rec := b.call(t, "POST", "/api/v1/posts", b.user, body, nil)
		no5xx(t, rec.Code, "create post", rec.Body.String())
		want := map[string]int{}
		if rec.Code == http.StatusCreated {
			want["posts"] = 1
		}
		checkWrites(t, before, tables(t, b, "posts"), want, "create post "+body)
		rec = b.call(t, "PATCH", "/api/v1/posts/"+itoa(post.ID), b.user, body, nil)
		no5xx(t, rec.Code, "patch post", rec.Body.String())
		if u, err := url.ParseQuery(query); err == nil {
			rec = b.call(t, "GET", "/api/v1/posts?"+u.Encode(), "", nil, nil)
			no5xx(t, rec.Code, "list posts", rec.Body.String())
			rec = b.call(t, "GET", "/api/v1/users?"+u.Encode(), "Bearer "+token, nil, nil)
			no5xx(t, rec.Code, "list users", rec.Body.String())
		}
	})
}

func FuzzOrders(f *testing.F) {
	for _, s := range []string{
		`{"items":[{"sku":"a","quantity":1,"unit_price_cents":100}],"currency":"EUR"}`,
		`{"items":[{"sku":"a","quantity":1000000,"unit_price_cents":1000000000}],"currency":"EUR"}`,
		`{"items":[],"currency":"EUR"}`,
		`{"items":[{"sku":"\u0000","quantity":1,"unit_price_cents":1}],"currency":"EUR"}`,
		`{"items":[{"sku":"a","quantity":99999999999999999999,"unit_price_cents":1}],"currency":"EUR"}`,
		`{"items":[{"sku":"a","quantity":-1,"unit_price_cents":1}],"currency":"eur"}`,
		`{"items":null,"currency":null}`,
	} {
		f.Add(s, "")
		f.Add(s, "key-1")
	}
	b := setupInput(f)
	f.Fuzz(func(t *testing.T, body, key string) {
		before := tables(t, b, "orders", "outbox", "workflows", "idempotency_keys")
		var header []string
		if key != "" {
			header = []string{"Idempotency-Key", key}
		}
		rec := b.call(t, "POST", "/api/v1/orders", b.user, body, nil, header...)
		no5xx(t, rec.Code, "create order", rec.Body.String())
		want := map[string]int{}
		if rec.Code == http.StatusCreated && rec.Header().Get("Idempotent-Replayed") == "" {
			// The order's workflow, and order:process in the outbox (its
			// confirmation waits for it).
			want = map[string]int{"orders": 1, "outbox": 1, "workflows": 1}
			if key != "" {
				want["idempotency_keys"] = 1
			}
		}
		checkWrites(t, before, tables(t, b, "orders", "outbox", "workflows", "idempotency_keys"), want, "create order "+body)
		var open int
		if err := b.db.GetContext(context.Background(), &open, `SELECT count(*) FROM idempotency_keys WHERE status = 0`); err != nil || open != 0 {
			t.Fatalf("%d idempotency keys left in progress (%v)", open, err)
		}
	})
}

func FuzzTasks(f *testing.F) {
	for _, s := range []string{
		`{"type":"system:ping","payload":{"sleep_ms":1}}`,
		`{"type":"system:ping","countdown":9223372036854775807}`,
		`{"type":"system:ping","timeout":0,"unique_for":-1,"max_retry":101}`,
		`{"type":"system:ping","eta":"9999-12-31T23:59:59Z"}`,
		`{"type":"system:ping","task_id":"schedule:x:1"}`,
		`{"type":"maintenance:cleanup","payload":{"max_age_hours":2562048}}`,
		`{"type":"email:welcome","payload":{"user_id":9223372036854775807}}`,
		`{"type":"nope"}`,
		`{"type":"system:ping","payload":"\u0000"}`,
	} {
		f.Add(s, "")
	}
	f.Add(`{"type":"system:ping"}`, "k")
	b := setupInput(f)
	admin := "Bearer " + token
	f.Fuzz(func(t *testing.T, body, key string) {
		var header []string
		if key != "" {
			header = []string{"Idempotency-Key", key}
		}
		rec := b.call(t, "POST", "/api/v1/tasks", admin, body, nil, header...)
		no5xx(t, rec.Code, "create task", rec.Body.String())
		var open int
		if err := b.db.GetContext(context.Background(), &open, `SELECT count(*) FROM idempotency_keys WHERE status = 0`); err != nil || open != 0 {
			t.Fatalf("%d idempotency keys left in progress (%v)", open, err)
		}
		rec = b.call(t, "GET", "/api/v1/tasks/"+url.PathEscape(body)+"?wait=0", admin, nil, nil)
		no5xx(t, rec.Code, "get task", rec.Body.String())
	})
}

func FuzzSchedules(f *testing.F) {
	for _, s := range []string{
		`{"name":"n","spec":"@every 1h","task_type":"system:ping"}`,
		`{"name":"n","spec":"@every 0s","task_type":"system:ping"}`,
		`{"name":"n","spec":"0 0 * * *","timezone":"Mars/Olympus","task_type":"system:ping"}`,
		`{"name":"n","spec":"@daily","task_type":"system:ping","timeout":9223372036,"catchup_window":-1,"max_retry":3000000000}`,
		`{"name":"n","spec":"@daily","task_type":"maintenance:cleanup","payload":{"max_age_hours":2562048}}`,
		`{"name":"N\u0000","spec":"@daily","task_type":"system:ping"}`,
	} {
		f.Add(s)
	}
	b := setupInput(f)
	admin := "Bearer " + token
	if rec := b.call(f, "POST", "/api/v1/schedules", admin, `{"name":"fixture","spec":"@daily","task_type":"system:ping"}`, nil); rec.Code != http.StatusCreated {
		f.Fatalf("fixture schedule: %d %s", rec.Code, rec.Body)
	}
	f.Fuzz(func(t *testing.T, body string) {
		before := tables(t, b, "schedules")
		rec := b.call(t, "POST", "/api/v1/schedules", admin, body, nil)
		no5xx(t, rec.Code, "create schedule", rec.Body.String())
		want := map[string]int{}
		if rec.Code == http.StatusCreated {
			want["schedules"] = 1
		}
		checkWrites(t, before, tables(t, b, "schedules"), want, "create schedule "+body)
		rec = b.call(t, "PATCH", "/api/v1/schedules/fixture", admin, body, nil)
		no5xx(t, rec.Code, "patch schedule", rec.Body.String())
		checkWrites(t, before, tables(t, b, "schedules"), want, "patch schedule "+body)
	})
}

func FuzzWorkflows(f *testing.F) {
	for _, s := range []string{
		`{"name":"w","steps":[{"id":"a","type":"system:ping"},{"id":"b","type":"system:ping","after":["a"]}]}`,
		`{"steps":[{"id":"a","type":"system:ping","after":["b"]},{"id":"b","type":"system:ping","after":["a"]}]}`,
		`{"steps":[{"id":"a","type":"system:ping","countdown":9223372036854775807,"timeout":-1,"max_retry":3000000000}]}`,
		`{"name":"\u0000","steps":[{"id":"\u0000","type":"system:ping","payload":{"fail":"\u0000"}}]}`,
		`{"steps":[{"id":"a","type":"system:ping","after":[""],"if_parent_failed":"run","queue":"\u0000"}]}`,
		`{"steps":[{"id":"a","type":"nope","payload":[]}]}`,
		`{"steps":null}`,
	} {
		f.Add(s, "")
	}
	f.Add(`{"steps":[{"id":"a","type":"system:ping"}]}`, "k")
	b := setupInput(f)
	admin := "Bearer " + token
	f.Fuzz(func(t *testing.T, body, key string) {
		var header []string
		if key != "" {
			header = []string{"Idempotency-Key", key}
		}
		before := tables(t, b, "workflows", "outbox")
		rec := b.call(t, "POST", "/api/v1/workflows", admin, body, nil, header...)
		no5xx(t, rec.Code, "start workflow", rec.Body.String())
		if rec.Code != http.StatusAccepted {
			checkWrites(t, before, tables(t, b, "workflows", "outbox"), map[string]int{}, "start workflow "+body)
		}
		rec = b.call(t, "GET", "/api/v1/workflows/"+url.PathEscape(body)+"?wait=0", admin, nil, nil)
		no5xx(t, rec.Code, "get workflow", rec.Body.String())
		rec = b.call(t, "GET", "/api/v1/workflows?state="+url.QueryEscape(body), admin, nil, nil)
		no5xx(t, rec.Code, "list workflows", rec.Body.String())
	})
}
