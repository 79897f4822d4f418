package store_test

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

// Workflows, their steps' tasks and outbox rows get time-ordered (version 7)
// UUIDs, so inserts go to the newest end of their primary keys.
func TestNewIDsAreTimeOrdered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tx := testenv.Tx(t)
	before := time.Now().Add(-time.Minute)
	w, steps, err := store.NewWorkflows(tx).Create(ctx, store.NewWorkflow{Name: "ids", Steps: []store.NewWorkflowStep{
		{StepID: "a", TaskType: "system:ping", Payload: []byte(`{}`), Queue: "default", IfParentFailed: "cancel"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	outboxID, err := store.NewOutbox(tx).Add(ctx, "system:ping", []byte(`{}`), "")
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(time.Minute)
	for _, id := range []string{w.ID, steps[0].TaskID, outboxID} {
		b, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
		if err != nil || len(b) != 16 {
			t.Fatalf("id %q is not a UUID", id)
		}
		if v := b[6] >> 4; v != 7 {
			t.Fatalf("id %s is version %d, want 7", id, v)
		}
		var ms int64
		for _, x := range b[:6] {
			ms = ms<<8 | int64(x)
		}
		if at := time.UnixMilli(ms); at.Before(before) || at.After(after) {
			t.Fatalf("id %s carries time %s, want now", id, at)
		}
	}
}
