package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

// countingTx counts the statements sent through a repository.
type countingTx struct {
	*sqlx.Tx
	n atomic.Int64
}

func (c *countingTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	c.n.Add(1)
	return c.Tx.ExecContext(ctx, q, args...)
}

func (c *countingTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	c.n.Add(1)
	return c.Tx.QueryContext(ctx, q, args...)
}

func (c *countingTx) QueryxContext(ctx context.Context, q string, args ...any) (*sqlx.Rows, error) {
	c.n.Add(1)
	return c.Tx.QueryxContext(ctx, q, args...)
}

func (c *countingTx) QueryRowxContext(ctx context.Context, q string, args ...any) *sqlx.Row {
	c.n.Add(1)
	return c.Tx.QueryRowxContext(ctx, q, args...)
}

func (c *countingTx) GetContext(ctx context.Context, dest any, q string, args ...any) error {
	c.n.Add(1)
	return c.Tx.GetContext(ctx, dest, q, args...)
}

func (c *countingTx) SelectContext(ctx context.Context, dest any, q string, args ...any) error {
	c.n.Add(1)
	return c.Tx.SelectContext(ctx, dest, q, args...)
}

func mkUser(t *testing.T, q store.Querier, email string) store.User {
	t.Helper()
	u := store.User{Email: email, Name: "Name of " + email}
	if err := store.NewUsers(q).Create(context.Background(), &u); err != nil {
		t.Fatal(err)
	}
	return u
}

// The post list loads each post's author without a query per row: the
// number of statements is the same for 1 and for 50 posts by 50 authors.
func TestPostListQueryCountIsConstant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testenv.Tx(t)
	posts := store.NewPosts(tx)

	count := func() (int64, int) {
		ct := &countingTx{Tx: tx}
		list, _, err := store.NewPosts(ct).ListPublished(ctx, store.PostFilter{}, store.Page{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list {
			if p.AuthorName == "" {
				t.Fatalf("post %d has no author name", p.ID)
			}
		}
		return ct.n.Load(), len(list)
	}
	u := mkUser(t, tx, "first@example.com")
	if _, err := posts.Create(ctx, u.ID, "one", "", true); err != nil {
		t.Fatal(err)
	}
	few, n1 := count()
	for i := range 49 {
		a := mkUser(t, tx, fmt.Sprintf("author%d@example.com", i))
		if _, err := posts.Create(ctx, a.ID, fmt.Sprintf("post %d", i), "body", true); err != nil {
			t.Fatal(err)
		}
	}
	many, n50 := count()
	if n1 != 1 || n50 != 50 {
		t.Fatalf("listed %d and %d posts", n1, n50)
	}
	if few != many || many > 2 {
		t.Fatalf("queries: %d for 1 post, %d for 50 posts; want the same, at most 2 (page + count)", few, many)
	}
}

func TestPostsListFilterOrderAndPostCount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testenv.Tx(t)
	posts := store.NewPosts(tx)
	a, b := mkUser(t, tx, "a@example.com"), mkUser(t, tx, "b@example.com")
	p1, _ := posts.Create(ctx, a.ID, "a1", "", true)
	_, _ = posts.Create(ctx, a.ID, "a-draft", "", false)
	p3, _ := posts.Create(ctx, b.ID, "b1", "", true)
	p4, _ := posts.Create(ctx, a.ID, "a2", "", true)

	list, total, err := posts.ListPublished(ctx, store.PostFilter{}, store.Page{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if total != 3 || len(list) != 3 || list[0].ID != p4.ID || list[1].ID != p3.ID || list[2].ID != p1.ID {
		t.Fatalf("list = %+v total %d; want newest first, drafts hidden", list, total)
	}
	list, total, _ = posts.ListPublished(ctx, store.PostFilter{AuthorID: a.ID}, store.Page{Skip: 1, Limit: 1})
	if total != 2 || len(list) != 1 || list[0].ID != p1.ID {
		t.Fatalf("author page = %+v total %d", list, total)
	}
	prof, err := store.NewUsers(tx).Profile(ctx, a.ID, true)
	if err != nil || prof.PostCount != 3 {
		t.Fatalf("profile = %+v, %v; want post_count 3 (drafts count)", prof, err)
	}
	title := "renamed"
	up, err := posts.Update(ctx, p1.ID, store.PostPatch{Title: &title})
	if err != nil || up.Title != "renamed" || !up.Published {
		t.Fatalf("update = %+v, %v", up, err)
	}
	if err := posts.Delete(ctx, p1.ID); err != nil {
		t.Fatal(err)
	}
	if err := posts.Delete(ctx, p1.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// TakeDue marks the rows it takes sent; a row the sender could not send is
// put back with MarkFailed: unsent, due again after its backoff.
func TestOutboxTakeDueSentFailed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testenv.Tx(t)
	ob := store.NewOutbox(tx)
	id1, err := ob.Add(ctx, "email:welcome", []byte(`{"user_id":1}`), "req-1")
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := ob.Add(ctx, "email:welcome", []byte(`{"user_id":2}`), "")
	due, err := ob.TakeDue(ctx, 10, 0)
	if err != nil || len(due) != 2 {
		t.Fatalf("due = %+v, %v", due, err)
	}
	byID := map[string]store.OutboxEntry{due[0].ID: due[0], due[1].ID: due[1]}
	if byID[id1].RequestID != "req-1" || byID[id1].TaskType != "email:welcome" || string(byID[id2].Payload) != `{"user_id": 2}` {
		t.Fatalf("taken rows = %+v", due)
	}
	if e, _ := ob.Get(ctx, id1); e.SentAt == nil {
		t.Fatalf("taken row not marked sent: %+v", e)
	}
	if err := ob.MarkFailed(ctx, id2, "redis down", time.Hour); err != nil {
		t.Fatal(err)
	}
	if due, _ := ob.TakeDue(ctx, 10, 0); len(due) != 0 {
		t.Fatalf("due after sent/failed = %+v", due)
	}
	st, err := ob.Stats(ctx)
	if err != nil || st.Pending != 1 || st.Retrying != 1 {
		t.Fatalf("stats = %+v, %v", st, err)
	}
	e, _ := ob.Get(ctx, id2)
	if e.Attempts != 1 || e.LastError != "redis down" || e.SentAt != nil {
		t.Fatalf("failed row = %+v", e)
	}
	n, err := ob.DeleteSentBefore(ctx, time.Now().Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("DeleteSentBefore = %d, %v; want only the sent row", n, err)
	}
}

// A row taken and then given up (MarkDead) is dead, not sent; one taken by
// a transaction that rolls back is due again.
func TestOutboxTakeThenDeadOrRollback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	ob := store.NewOutbox(d)
	dead, _ := ob.Add(ctx, "system:ping", []byte(`{}`), "")
	back, _ := ob.Add(ctx, "system:ping", []byte(`{}`), "")

	tx, err := d.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	if rows, err := store.NewOutbox(tx).Take(ctx, []string{dead}); err != nil || len(rows) != 1 || rows[0].ID != dead {
		t.Fatalf("Take = %+v, %v", rows, err)
	}
	if err := store.NewOutbox(tx).MarkDead(ctx, dead, "unknown task type"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if e, _ := ob.Get(ctx, dead); e.DeadAt == nil || e.SentAt != nil || e.Attempts != 1 {
		t.Fatalf("dead row = %+v", e)
	}

	tx, err = d.Beginx()
	if err != nil {
		t.Fatal(err)
	}
	if rows, err := store.NewOutbox(tx).Take(ctx, []string{back, dead}); err != nil || len(rows) != 1 || rows[0].ID != back {
		t.Fatalf("Take = %+v, %v; want only the live row", rows, err)
	}
	_ = tx.Rollback()
	if e, _ := ob.Get(ctx, back); e.SentAt != nil {
		t.Fatalf("row taken by a rolled-back transaction is marked sent: %+v", e)
	}
	st, err := ob.Stats(ctx)
	if err != nil || st.Pending != 1 || st.Dead != 1 {
		t.Fatalf("stats = %+v, %v", st, err)
	}
}

// Two relays (api replicas) never get the same row: SKIP LOCKED.
func TestOutboxDueSkipsLockedRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	if _, err := store.NewOutbox(d).Add(ctx, "system:ping", []byte(`{}`), ""); err != nil {
		t.Fatal(err)
	}
	tx1, _ := d.Beginx()
	defer tx1.Rollback()
	tx2, _ := d.Beginx()
	defer tx2.Rollback()
	a, err := store.NewOutbox(tx1).TakeDue(ctx, 10, 0)
	if err != nil || len(a) != 1 {
		t.Fatalf("first relay: %v %v", a, err)
	}
	b, err := store.NewOutbox(tx2).TakeDue(ctx, 10, 0)
	if err != nil || len(b) != 0 {
		t.Fatalf("second relay got %v, %v; want nothing while the row is locked", b, err)
	}
}

func TestIdempotencyReserveCompleteExpire(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testenv.Tx(t)
	idem := store.NewIdempotency(tx)
	ok, _, err := idem.Reserve(ctx, "user:1", "k", "h1", time.Hour)
	if err != nil || !ok {
		t.Fatalf("first reserve: %v %v", ok, err)
	}
	ok, rec, _ := idem.Reserve(ctx, "user:1", "k", "h1", time.Hour)
	if ok || rec.Status != 0 || rec.RequestHash != "h1" {
		t.Fatalf("second reserve: %v %+v", ok, rec)
	}
	if ok, _, _ := idem.Reserve(ctx, "user:2", "k", "h1", time.Hour); !ok {
		t.Fatal("keys are per owner")
	}
	if err := idem.Complete(ctx, "user:1", "k", 201, []byte(`{"id":1}`)); err != nil {
		t.Fatal(err)
	}
	_, rec, _ = idem.Reserve(ctx, "user:1", "k", "h2", time.Hour)
	if rec.Status != 201 || string(rec.Body) != `{"id":1}` {
		t.Fatalf("completed record = %+v", rec)
	}
	if err := idem.Release(ctx, "user:1", "k"); err != nil { // completed: kept
		t.Fatal(err)
	}
	// An expired key is free again.
	if ok, _, _ := idem.Reserve(ctx, "user:3", "old", "h", -time.Second); !ok {
		t.Fatal("reserve")
	}
	if ok, _, _ := idem.Reserve(ctx, "user:3", "old", "other", time.Hour); !ok {
		t.Fatal("an expired key must be reservable again")
	}
	if _, err := idem.DeleteExpired(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}
}

func TestAPIKeysCreateFind(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t) // a conflict aborts a transaction: use the database
	keys := store.NewAPIKeys(d)
	k, err := keys.Create(ctx, "billing", "hash-1")
	if err != nil || k.ID == 0 {
		t.Fatalf("create = %+v, %v", k, err)
	}
	if _, err := keys.Create(ctx, "billing", "hash-2"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	got, err := keys.ByHash(ctx, "hash-1")
	if err != nil || got.Name != "billing" || got.LastUsedAt == nil {
		t.Fatalf("ByHash = %+v, %v", got, err)
	}
	if _, err := keys.ByHash(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown hash: %v", err)
	}
	// Use within the minute is not written again; older use is.
	lastUsed := func() time.Time {
		var at time.Time
		if err := d.GetContext(ctx, &at, `SELECT last_used_at FROM api_keys WHERE id = $1`, k.ID); err != nil {
			t.Fatal(err)
		}
		return at
	}
	first := lastUsed()
	if again, err := keys.ByHash(ctx, "hash-1"); err != nil || !again.LastUsedAt.Equal(first) || !lastUsed().Equal(first) {
		t.Fatalf("second use within a minute: %+v, %v; stored %v, first %v", again, err, lastUsed(), first)
	}
	if _, err := d.ExecContext(ctx, `UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE id = $1`, k.ID); err != nil {
		t.Fatal(err)
	}
	old := lastUsed()
	if later, err := keys.ByHash(ctx, "hash-1"); err != nil || !later.LastUsedAt.After(old) || !lastUsed().After(old) {
		t.Fatalf("use after two minutes: %+v, %v; stored %v, was %v", later, err, lastUsed(), old)
	}
}
