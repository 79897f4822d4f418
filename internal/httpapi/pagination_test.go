package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/store"
)

// listItem is what the pagination tests read of any listed row.
type listItem struct {
	ID        int64     `json:"id"`
	AuthorID  int64     `json:"author_id"`
	UserID    int64     `json:"user_id"`
	Published bool      `json:"published"`
	CreatedAt time.Time `json:"created_at"`
}

type listPage struct {
	Data  []listItem `json:"data"`
	Total *int64     `json:"total"`
}

// getPage fetches one page and checks the list's shape: "data" is an array
// (never null) and "total" is present.
func getPage(t *testing.T, b *productBundle, path, authz string) listPage {
	t.Helper()
	var raw map[string]json.RawMessage
	rec := b.call(t, "GET", path, authz, nil, &raw)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	if d := string(raw["data"]); !strings.HasPrefix(d, "[") {
		t.Fatalf("GET %s: data = %s, want an array", path, d)
	}
	var page listPage
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil || page.Total == nil {
		t.Fatalf("GET %s: %s lacks total (%v)", path, rec.Body, err)
	}
	return page
}

// walk reads every page of a list with the given limit and returns the
// rows in order, checking that each page but the last is full and that
// every page reports the same total.
func walk(t *testing.T, b *productBundle, path, authz string, limit int) ([]listItem, int64) {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	var all []listItem
	var total int64 = -1
	for skip := 0; ; skip += limit {
		page := getPage(t, b, fmt.Sprintf("%s%sskip=%d&limit=%d", path, sep, skip, limit), authz)
		if total == -1 {
			total = *page.Total
		} else if *page.Total != total {
			t.Fatalf("%s: total changed from %d to %d between pages", path, total, *page.Total)
		}
		all = append(all, page.Data...)
		if len(page.Data) < limit {
			if int64(len(all)) != total {
				t.Fatalf("%s: pages hold %d rows, total says %d", path, len(all), total)
			}
			return all, total
		}
		if skip > 10_000 {
			t.Fatalf("%s: pagination does not end", path)
		}
	}
}

func ids(items []listItem) []int64 {
	out := make([]int64, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	return out
}

// sameSet reports whether got holds exactly want's IDs, each once.
func sameSet(got, want []int64) bool {
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

func TestPagination(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupFull(t)
	f := newFixtures(t, b) // owner, other, admin: 3 users
	admin, user := f.authz[adminJWT], f.authz[owner]

	// 40 more users, straight into the store (no bcrypt needed to list them).
	userIDs := []int64{f.owner.ID, f.other.ID}
	for i := range 40 {
		u := store.User{Email: fmt.Sprintf("u%02d@example.com", i), Name: fmt.Sprintf("U%02d", i), PasswordHash: "x"}
		if err := store.NewUsers(b.db).Create(ctx, &u); err != nil {
			t.Fatal(err)
		}
		userIDs = append(userIDs, u.ID)
	}

	// Posts: the owner 30 published and 5 drafts, the other user 15 and 3.
	// Creation times are shuffled so that "newest first" cannot pass by
	// sorting on the ID.
	posts := store.NewPosts(b.db)
	var published, byOwner, byOther []int64
	for i := range 53 {
		author, pub := f.owner.ID, true
		switch {
		case i >= 35 && i < 50:
			author = f.other.ID
		case i >= 50:
			author, pub = f.other.ID, false
		case i >= 30:
			pub = false
		}
		p, err := posts.Create(ctx, author, fmt.Sprint("Post ", i), "", pub)
		if err != nil {
			t.Fatal(err)
		}
		at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration((i*37)%53) * time.Hour)
		if _, err := b.db.ExecContext(ctx, `UPDATE posts SET created_at = $1 WHERE id = $2`, at, p.ID); err != nil {
			t.Fatal(err)
		}
		if pub {
			published = append(published, p.ID)
			if author == f.owner.ID {
				byOwner = append(byOwner, p.ID)
			} else {
				byOther = append(byOther, p.ID)
			}
		}
	}

	// Orders: 25 of the owner's, 5 of the other user's.
	orders := store.NewOrders(b.db)
	var ownerOrders, otherOrders, allOrders []int64
	for i := range 30 {
		uid := f.owner.ID
		if i%6 == 5 {
			uid = f.other.ID
		}
		o, err := orders.Create(ctx, uid, "EUR", []store.OrderItem{{SKU: "a", Quantity: 1, UnitPriceCents: int64(i)}})
		if err != nil {
			t.Fatal(err)
		}
		allOrders = append(allOrders, o.ID)
		if uid == f.owner.ID {
			ownerOrders = append(ownerOrders, o.ID)
		} else {
			otherOrders = append(otherOrders, o.ID)
		}
	}

	t.Run("default and maximum limit", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"/api/v1/users", "/api/v1/posts", "/api/v1/orders"} {
			if page := getPage(t, b, path, admin); len(page.Data) != 20 {
				t.Errorf("%s: %d rows without ?limit=, want 20", path, len(page.Data))
			}
			page := getPage(t, b, path+"?limit=100", admin)
			if want := min(*page.Total, 100); int64(len(page.Data)) != want {
				t.Errorf("%s?limit=100: %d rows, want %d", path, len(page.Data), want)
			}
			if page := getPage(t, b, path+"?skip=1000", admin); len(page.Data) != 0 || *page.Total == 0 {
				t.Errorf("%s?skip=1000: %d rows, total %d; want none of a non-zero total", path, len(page.Data), *page.Total)
			}
		}
	})

	t.Run("users pages cover every user once, oldest first", func(t *testing.T) {
		t.Parallel()
		got, total := walk(t, b, "/api/v1/users", admin, 7)
		if total != 43 || !slices.IsSorted(ids(got)) || len(slices.Compact(ids(got))) != 43 {
			t.Fatalf("users: total %d, ids %v", total, ids(got))
		}
		for _, id := range userIDs {
			if !slices.Contains(ids(got), id) {
				t.Fatalf("user %d is on no page", id)
			}
		}
	})

	t.Run("posts pages: published only, newest first, each once", func(t *testing.T) {
		t.Parallel()
		for _, limit := range []int{1, 7, 20, 45, 100} {
			got, total := walk(t, b, "/api/v1/posts", "", limit)
			if total != 45 || !sameSet(ids(got), published) {
				t.Fatalf("limit %d: total %d, ids %v, want the 45 published posts", limit, total, ids(got))
			}
			for i := 1; i < len(got); i++ {
				prev, cur := got[i-1], got[i]
				if cur.CreatedAt.After(prev.CreatedAt) || (cur.CreatedAt.Equal(prev.CreatedAt) && cur.ID > prev.ID) {
					t.Fatalf("limit %d: post %d (%s) listed after older post %d (%s)", limit, cur.ID, cur.CreatedAt, prev.ID, prev.CreatedAt)
				}
			}
		}
		// A draft is not listed even for its author or an admin.
		for _, authz := range []string{user, admin} {
			if page := getPage(t, b, "/api/v1/posts?limit=100", authz); *page.Total != 45 {
				t.Fatalf("posts as a signed-in caller: total %d, want 45", *page.Total)
			}
		}
	})

	t.Run("posts by author", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			author int64
			want   []int64
		}{{f.owner.ID, byOwner}, {f.other.ID, byOther}, {999_999, nil}} {
			got, total := walk(t, b, fmt.Sprintf("/api/v1/posts?author_id=%d", tc.author), "", 6)
			if total != int64(len(tc.want)) || !sameSet(ids(got), tc.want) {
				t.Errorf("author %d: total %d, ids %v; want %v", tc.author, total, ids(got), tc.want)
			}
			for _, p := range got {
				if p.AuthorID != tc.author || !p.Published {
					t.Errorf("author %d: listed %+v", tc.author, p)
				}
			}
		}
	})

	t.Run("orders: mine for users, all for admins, newest first", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			who  string
			want []int64
		}{{owner, ownerOrders}, {otherUser, otherOrders}, {adminJWT, allOrders}} {
			got, total := walk(t, b, "/api/v1/orders", f.authz[tc.who], 4)
			if total != int64(len(tc.want)) || !sameSet(ids(got), tc.want) {
				t.Fatalf("%s: total %d, ids %v; want %v", tc.who, total, ids(got), tc.want)
			}
			// Created one after another, so newest first is also
			// descending IDs.
			for i := 1; i < len(got); i++ {
				if got[i].CreatedAt.After(got[i-1].CreatedAt) || got[i].ID > got[i-1].ID {
					t.Fatalf("%s: order %d listed after %d", tc.who, got[i].ID, got[i-1].ID)
				}
			}
		}
	})
}

// TestPaginationRejectsOutOfRange: skip and limit outside their bounds, or
// not integers, are a 422 naming the parameter, on every paginated list.
func TestPaginationRejectsOutOfRange(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	cases := []struct {
		query  string
		fields []string
	}{
		{"limit=0", []string{"limit"}},
		{"limit=101", []string{"limit"}},
		{"limit=-1", []string{"limit"}},
		{"limit=abc", []string{"limit"}},
		{"limit=1.5", []string{"limit"}},
		{"limit=1e2", []string{"limit"}},
		{"limit=99999999999999999999", []string{"limit"}},
		{"skip=-1", []string{"skip"}},
		{"skip=abc", []string{"skip"}},
		{"skip=2.0", []string{"skip"}},
		{"skip=-5&limit=500", []string{"skip", "limit"}},
	}
	postCases := []struct {
		query  string
		fields []string
	}{
		{"author_id=0", []string{"author_id"}},
		{"author_id=-3", []string{"author_id"}},
		{"author_id=abc", []string{"author_id"}},
	}
	for _, path := range []string{"/api/v1/users", "/api/v1/posts", "/api/v1/orders"} {
		all := cases
		if path == "/api/v1/posts" {
			all = append(slices.Clone(cases), postCases...)
		}
		for _, tc := range all {
			var e errorBody
			rec := b.call(t, "GET", path+"?"+tc.query, f.authz[adminJWT], nil, &e)
			if rec.Code != http.StatusUnprocessableEntity || e.Error.Code != "validation_failed" || len(e.Error.Fields) != len(tc.fields) {
				t.Errorf("%s?%s: %d %s, want 422 naming %v", path, tc.query, rec.Code, rec.Body, tc.fields)
				continue
			}
			for _, name := range tc.fields {
				if e.Error.Fields[name] == "" {
					t.Errorf("%s?%s: fields %v do not name %q", path, tc.query, e.Error.Fields, name)
				}
			}
		}
		for _, q := range []string{"limit=1", "limit=100", "skip=0", "skip=0&limit=20"} {
			if rec := b.call(t, "GET", path+"?"+q, f.authz[adminJWT], nil, nil); rec.Code != http.StatusOK {
				t.Errorf("%s?%s: %d %s, want 200", path, q, rec.Code, rec.Body)
			}
		}
	}
}
