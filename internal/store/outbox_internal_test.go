package store

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// Due reads only the rows it returns: with thousands of rows due (a
// producer's big group), its plan walks outbox_due_idx and stops at the
// limit instead of sorting every due row.
func TestDueStopsAtItsLimit(t *testing.T) {
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
	if err := d.GetContext(ctx, &plan, `EXPLAIN (FORMAT JSON) `+dueSQL, 100); err != nil {
		t.Fatal(err)
	}
	var nodes []struct {
		Plan json.RawMessage `json:"Plan"`
	}
	if err := json.Unmarshal(plan, &nodes); err != nil || len(nodes) != 1 {
		t.Fatalf("plan %s: %v", plan, err)
	}
	p := string(nodes[0].Plan)
	if strings.Contains(p, `"Sort"`) || !strings.Contains(p, "outbox_due_idx") {
		t.Errorf("Due's plan sorts the due rows or does not use outbox_due_idx: %s", p)
	}
	tx, err := d.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if rows, err := NewOutbox(tx).Due(ctx, 100); err != nil || len(rows) != 100 {
		t.Errorf("Due = %d rows, %v; want 100", len(rows), err)
	}
}
