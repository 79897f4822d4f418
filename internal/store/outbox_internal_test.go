package store

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// TakeDue reads only the rows it returns: with thousands of rows due (a
// producer's big group), its plan walks outbox_due_idx and stops at the
// limit instead of sorting every due row, and marks each row through its
// primary key, not by scanning the table.
func TestTakeDueStopsAtItsLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	if _, err := d.ExecContext(ctx, `INSERT INTO outbox (task_type, payload)
		SELECT 'system:ping', '{}' FROM generate_series(1, 5000)`); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ExecContext(ctx, `ANALYZE outbox`); err != nil {
		t.Fatal(err)
	}
	var plan []byte
	if err := d.GetContext(ctx, &plan, `EXPLAIN (FORMAT JSON) `+takeDueSQL, 100, 0.0); err != nil {
		t.Fatal(err)
	}
	var nodes []struct {
		Plan json.RawMessage `json:"Plan"`
	}
	if err := json.Unmarshal(plan, &nodes); err != nil || len(nodes) != 1 {
		t.Fatalf("plan %s: %v", plan, err)
	}
	p := string(nodes[0].Plan)
	if strings.Contains(p, `"Sort"`) || !strings.Contains(p, "outbox_due_idx") || strings.Contains(p, "Seq Scan") {
		t.Errorf("TakeDue's plan sorts the due rows, does not use outbox_due_idx or scans the table: %s", p)
	}
	tx, err := d.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if rows, err := NewOutbox(tx).TakeDue(ctx, 100, 0); err != nil || len(rows) != 100 {
		t.Errorf("TakeDue = %d rows, %v; want 100", len(rows), err)
	}
}

// Take probes the primary key for the IDs it is given, to lock them and to
// mark them, rather than scanning the table.
func TestTakeProbesThePrimaryKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	var ids []string
	if err := d.SelectContext(ctx, &ids, `INSERT INTO outbox (task_type, payload)
		SELECT 'system:ping', '{}' FROM generate_series(1, 5000) RETURNING id::text`); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ExecContext(ctx, `ANALYZE outbox`); err != nil {
		t.Fatal(err)
	}
	var plan []byte
	if err := d.GetContext(ctx, &plan, `EXPLAIN (FORMAT JSON) `+takeSQL, pq.Array(ids[:50])); err != nil {
		t.Fatal(err)
	}
	if p := string(plan); strings.Contains(p, "Seq Scan") || strings.Contains(p, "Hash") || strings.Count(p, "outbox_pkey") != 2 {
		t.Errorf("Take's plan does not probe outbox_pkey twice (lock, mark): %s", p)
	}
	tx, err := d.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if rows, err := NewOutbox(tx).Take(ctx, ids[:500]); err != nil || len(rows) != 500 {
		t.Errorf("Take = %d rows, %v; want 500", len(rows), err)
	}
}

// Taking rows makes the transaction commit asynchronously, with no
// statement of its own for it.
func TestTakeMakesTheCommitAsynchronous(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	var id string
	if err := d.GetContext(ctx, &id, `INSERT INTO outbox (task_type, payload) VALUES ('system:ping', '{}') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		take func(o *Outbox) ([]OutboxEntry, error)
		rows int
		want string
	}{
		{"Take", func(o *Outbox) ([]OutboxEntry, error) { return o.Take(ctx, []string{id}) }, 1, "off"},
		{"TakeDue", func(o *Outbox) ([]OutboxEntry, error) { return o.TakeDue(ctx, 10, 0) }, 1, "off"},
	} {
		tx, err := d.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		// As on a database with the default (the test one commits
		// asynchronously throughout).
		if _, err := tx.ExecContext(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
			t.Fatal(err)
		}
		rows, err := tc.take(NewOutbox(tx))
		if err != nil || len(rows) != tc.rows {
			t.Fatalf("%s: %d rows, %v; want %d", tc.name, len(rows), err, tc.rows)
		}
		var got string
		if err := tx.GetContext(ctx, &got, `SHOW synchronous_commit`); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil { // the row stays to take again
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("%s: synchronous_commit in its transaction = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// Take's plan probes the primary key also as a prepared statement's
// generic plan (the dispatcher prepares it), and when the statistics are
// older than the rows to send: ANALYZEd while nearly every row was sent,
// outbox_due_idx looked empty, and the generic plan walked it, through
// every unsent row, for each batch — 10,000 entries a batch while a
// 10,000-step group was being sent.
func TestTakesGenericPlanProbesThePrimaryKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	if _, err := d.ExecContext(ctx, `INSERT INTO outbox (task_type, payload, sent_at)
		SELECT 'system:ping', '{}', now() FROM generate_series(1, 20000)`); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ExecContext(ctx, `ANALYZE outbox`); err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := d.SelectContext(ctx, &ids, `INSERT INTO outbox (task_type, payload)
		SELECT 'system:ping', '{}' FROM generate_series(1, 5000) RETURNING id::text`); err != nil {
		t.Fatal(err)
	}
	tx, err := d.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SET LOCAL plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `PREPARE take_generic(uuid[]) AS `+takeSQL); err != nil {
		t.Fatal(err)
	}
	var plan []byte
	if err := tx.GetContext(ctx, &plan, `EXPLAIN (FORMAT JSON) EXECUTE take_generic('{`+strings.Join(ids[:50], ",")+`}')`); err != nil {
		t.Fatal(err)
	}
	if p := string(plan); strings.Contains(p, "outbox_due_idx") || strings.Count(p, "outbox_pkey") != 2 {
		t.Errorf("Take's generic plan does not probe outbox_pkey twice (lock, mark): %s", p)
	}
}

// TakeDue with a grace leaves the rows that became due less than grace ago
// (a dispatcher's to send) and takes the older ones, oldest first.
func TestTakeDueLeavesFreshRowsForTheGrace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	var old, fresh string
	if err := d.GetContext(ctx, &old, `INSERT INTO outbox (task_type, payload, next_attempt_at)
		VALUES ('system:ping', '{}', now() - interval '10 seconds') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	if err := d.GetContext(ctx, &fresh, `INSERT INTO outbox (task_type, payload) VALUES ('system:ping', '{}') RETURNING id`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		grace time.Duration
		want  []string
	}{
		{time.Hour, nil},
		{5 * time.Second, []string{old}},
		{0, []string{fresh}}, // the old row was taken by the previous case
	} {
		tx, err := d.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := NewOutbox(tx).TakeDue(ctx, 10, tc.grace)
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rows {
			got = append(got, r.ID)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("grace %s: took %v, want %v", tc.grace, got, tc.want)
		}
	}
}
