package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

type postJSON struct {
	ID         int64     `json:"id"`
	AuthorID   int64     `json:"author_id"`
	AuthorName string    `json:"author_name"`
	Title      string    `json:"title"`
	Content    string    `json:"content"`
	Published  bool      `json:"published"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// TestPostLifecycle: create (a draft by default), read, patch some fields,
// publish, unpublish and delete, checking who sees what at each step.
func TestPostLifecycle(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	author := f.authz[owner]

	var p postJSON
	rec := b.call(t, "POST", "/api/v1/posts", author, map[string]any{"title": "  Hello  ", "content": "First"}, &p)
	if rec.Code != http.StatusCreated || p.ID == 0 || p.AuthorID != f.owner.ID || p.AuthorName != f.owner.Name ||
		p.Title != "Hello" || p.Content != "First" || p.Published || p.CreatedAt.IsZero() || p.UpdatedAt.IsZero() {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	path := fmt.Sprintf("/api/v1/posts/%d", p.ID)
	listed := func() bool {
		t.Helper()
		var list struct {
			Data []postJSON `json:"data"`
		}
		b.call(t, "GET", "/api/v1/posts?limit=100", "", nil, &list)
		for _, q := range list.Data {
			if q.ID == p.ID {
				return true
			}
		}
		return false
	}
	visible := func(who string) bool {
		t.Helper()
		rec := b.call(t, "GET", path, f.authz[who], nil, nil)
		if rec.Code != http.StatusOK && rec.Code != http.StatusNotFound {
			t.Fatalf("GET as %s: %d %s", who, rec.Code, rec.Body)
		}
		return rec.Code == http.StatusOK
	}
	if listed() || visible(anonymous) || visible(otherUser) || !visible(owner) || !visible(adminJWT) {
		t.Fatal("a draft must be visible to its author and admins only, and never listed")
	}

	// PATCH changes only the fields sent.
	var patched postJSON
	if rec := b.call(t, "PATCH", path, author, map[string]any{"content": "Second"}, &patched); rec.Code != http.StatusOK ||
		patched.Title != "Hello" || patched.Content != "Second" || patched.Published || patched.UpdatedAt.Before(p.UpdatedAt) {
		t.Fatalf("patch content: %d %s", rec.Code, rec.Body)
	}
	if rec := b.call(t, "PATCH", path, author, `{"title":null}`, &patched); rec.Code != http.StatusOK || patched.Title != "Hello" {
		t.Fatalf("patch with null title: %d %s", rec.Code, rec.Body)
	}

	// Publish: the viewset action's answer, then everyone sees it.
	var status map[string]any
	if rec := b.call(t, "POST", path+"/publish", author, nil, &status); rec.Code != http.StatusOK ||
		len(status) != 1 || status["status"] != "published" {
		t.Fatalf("publish: %d %s", rec.Code, rec.Body)
	}
	if !listed() || !visible(anonymous) || !visible(otherUser) {
		t.Fatal("a published post must be listed and visible to everyone")
	}
	if rec := b.call(t, "POST", path+"/publish", author, nil, &status); rec.Code != http.StatusOK || status["status"] != "published" {
		t.Fatalf("publish again: %d %s", rec.Code, rec.Body)
	}

	// An admin may edit someone else's post; it stays the author's.
	if rec := b.call(t, "PATCH", path, f.authz[adminJWT], map[string]any{"title": "Moderated"}, &patched); rec.Code != http.StatusOK ||
		patched.Title != "Moderated" || patched.AuthorID != f.owner.ID {
		t.Fatalf("admin patch: %d %s", rec.Code, rec.Body)
	}

	// Unpublish through PATCH: a draft again.
	if rec := b.call(t, "PATCH", path, author, map[string]any{"published": false}, &patched); rec.Code != http.StatusOK || patched.Published {
		t.Fatalf("unpublish: %d %s", rec.Code, rec.Body)
	}
	if listed() || visible(anonymous) {
		t.Fatal("an unpublished post is still public")
	}

	// Delete: gone for everyone, and a second delete is a 404.
	if rec := b.call(t, "DELETE", path, author, nil, nil); rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
		t.Fatalf("delete: %d %q", rec.Code, rec.Body)
	}
	if visible(owner) || visible(adminJWT) {
		t.Fatal("a deleted post is still visible")
	}
	if rec := b.call(t, "DELETE", path, author, nil, nil); rec.Code != http.StatusNotFound {
		t.Fatalf("delete again: %d", rec.Code)
	}
}

// TestPostForbiddenWritesChangeNothing: another user's PATCH, DELETE and
// publish are refused and leave the post as it was.
func TestPostForbiddenWritesChangeNothing(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	for _, published := range []bool{true, false} {
		path := f.post(t, published)
		var before postJSON
		b.call(t, "GET", path, f.authz[owner], nil, &before)
		for _, req := range []struct {
			method, path string
			body         any
		}{
			{"PATCH", path, map[string]any{"title": "Hijacked", "published": !published}},
			// An invalid body from someone else is refused for who they are
			// (403/404), not judged (422).
			{"PATCH", path, map[string]any{"title": "", "colour": "red"}},
			{"DELETE", path, nil},
			{"POST", path + "/publish", nil},
		} {
			for _, who := range []string{otherUser, apiKey} {
				if rec := b.call(t, req.method, req.path, f.authz[who], req.body, nil); rec.Code != http.StatusForbidden && rec.Code != http.StatusNotFound {
					t.Fatalf("%s %s as %s: %d %s", req.method, req.path, who, rec.Code, rec.Body)
				}
			}
		}
		var after postJSON
		if rec := b.call(t, "GET", path, f.authz[owner], nil, &after); rec.Code != http.StatusOK || after != before {
			t.Fatalf("published=%v: post changed by refused writes: %+v → %+v", published, before, after)
		}
	}
}

// TestPostValidation: bad bodies are 422 naming the field (400 when not
// JSON at all), checked on create and patch.
func TestPostValidation(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	author := f.authz[owner]
	path := f.post(t, false)
	cases := []struct {
		name         string
		method, path string
		body         any
		status       int
		field        string
	}{
		{"create without title", "POST", "/api/v1/posts", map[string]any{"content": "x"}, 422, "title"},
		{"create with blank title", "POST", "/api/v1/posts", map[string]any{"title": " \t "}, 422, "title"},
		{"create with long title", "POST", "/api/v1/posts", map[string]any{"title": strings.Repeat("t", 201)}, 422, "title"},
		{"create with published as string", "POST", "/api/v1/posts", `{"title":"T","published":"yes"}`, 422, "published"},
		{"create with title as number", "POST", "/api/v1/posts", `{"title":5}`, 422, "title"},
		{"create naming its author", "POST", "/api/v1/posts", map[string]any{"title": "T", "author_id": f.other.ID}, 422, "author_id"},
		{"create malformed", "POST", "/api/v1/posts", `{"title":"T"`, 400, ""},
		{"create empty body", "POST", "/api/v1/posts", "", 400, ""},
		{"create array", "POST", "/api/v1/posts", `[{"title":"T"}]`, 400, ""},
		{"patch blank title", "PATCH", path, map[string]any{"title": "  "}, 422, "title"},
		{"patch long title", "PATCH", path, map[string]any{"title": strings.Repeat("t", 201)}, 422, "title"},
		{"patch published as number", "PATCH", path, `{"published":1}`, 422, "published"},
		{"patch author", "PATCH", path, map[string]any{"author_id": f.other.ID}, 422, "author_id"},
		{"patch id", "PATCH", path, map[string]any{"id": 1}, 422, "id"},
	}
	for _, tc := range cases {
		var e errorBody
		rec := b.call(t, tc.method, tc.path, author, tc.body, &e)
		if rec.Code != tc.status || (tc.field != "" && e.Error.Fields[tc.field] == "") {
			t.Errorf("%s: %d %s, want %d naming %q", tc.name, rec.Code, rec.Body, tc.status, tc.field)
		}
	}
	var list struct {
		Total int64 `json:"total"`
	}
	var me userJSON
	b.call(t, "GET", "/api/v1/users/me", author, nil, &me)
	if me.PostCount != 1 {
		t.Fatalf("refused creates wrote posts: post_count %d, want 1", me.PostCount)
	}
	b.call(t, "GET", "/api/v1/posts", "", nil, &list)
	if list.Total != 0 {
		t.Fatalf("refused patches published the draft: %d listed", list.Total)
	}
}

// TestPostNotFound: IDs that name no post, or cannot, are 404 on every
// post endpoint.
func TestPostNotFound(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	for _, id := range []string{"999999", "0", "-1", "abc", "1.5"} {
		for _, req := range []struct{ method, suffix string }{
			{"GET", ""}, {"PATCH", ""}, {"DELETE", ""}, {"POST", "/publish"},
		} {
			var body any
			if req.method == "PATCH" {
				body = map[string]any{"title": "T"}
			}
			var e errorBody
			rec := b.call(t, req.method, "/api/v1/posts/"+id+req.suffix, f.authz[adminJWT], body, &e)
			if rec.Code != http.StatusNotFound || e.Error.Code != "not_found" {
				t.Errorf("%s /posts/%s%s: %d %s", req.method, id, req.suffix, rec.Code, rec.Body)
			}
		}
	}
}
