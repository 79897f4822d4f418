package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/conveyor-run/conveyor/internal/store"
)

// TestOutboxDeadAndRequeue: `api outbox dead` lists dead rows with their
// reasons; `api outbox requeue` makes one or all of them due again.
func TestOutboxDeadAndRequeue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupAdmin(t)
	ob := store.NewOutbox(b.db)
	var ids []string
	for _, typ := range []string{"email:retired", "report:gone"} {
		id, err := ob.Add(ctx, typ, json.RawMessage(`{}`), "")
		if err != nil {
			t.Fatal(err)
		}
		if err := ob.MarkDead(ctx, id, "cannot become a task: unknown task type "+typ); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}

	out, err := b.run([]string{"outbox", "dead"})
	if err != nil || !strings.Contains(out, ids[0]) || !strings.Contains(out, "unknown task type email:retired") || !strings.Contains(out, "2 dead outbox rows") {
		t.Fatalf("outbox dead: %q, %v", out, err)
	}
	if out, err := b.run([]string{"outbox", "requeue", "--id", ids[0]}); err != nil || !strings.Contains(out, "1 outbox rows requeued") {
		t.Fatalf("outbox requeue --id: %q, %v", out, err)
	}
	if st, _ := ob.Stats(ctx); st.Pending != 1 || st.Dead != 1 {
		t.Fatalf("stats after requeueing one: %+v", st)
	}
	if _, err := b.run([]string{"outbox", "requeue", "--id", ids[0]}); err == nil || !strings.Contains(err.Error(), "no dead row") {
		t.Fatalf("requeueing a row that is not dead: %v", err)
	}
	for _, bad := range [][]string{{"outbox"}, {"outbox", "requeue"}, {"outbox", "requeue", "--all", "--id", ids[1]}, {"outbox", "purge"}} {
		if _, err := b.run(bad); err == nil {
			t.Errorf("api %v: no error", bad)
		}
	}
	if out, err := b.run([]string{"outbox", "requeue", "--all"}); err != nil || !strings.Contains(out, "1 outbox rows requeued") {
		t.Fatalf("outbox requeue --all: %q, %v", out, err)
	}
}
