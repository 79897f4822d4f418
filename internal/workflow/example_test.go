package workflow_test

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/workflow"
	"github.com/conveyor-run/conveyor/tasks"
)

// The README's example: a chain whose middle is a chord, started inside the
// producer's own transaction.
func Example() {
	ping := func(id string, add int64) *workflow.Step { return workflow.Task(id, tasks.SystemPingPayload{Add: add}) }
	spec := workflow.Chain(
		ping("fetch", 1),
		workflow.Chord(workflow.Group(ping("a", 1), ping("b", 1)), ping("join", 0)), // join after a and b
		ping("publish", 0).RunIfParentFailed(),
	).Named("demo")
	for _, s := range spec.Steps {
		fmt.Println(s.ID, s.After)
	}

	start := func(ctx context.Context, database *sqlx.DB) error {
		return db.InTx(ctx, database, func(tx *sqlx.Tx) error {
			// … business writes with tx …
			v, err := workflow.Start(ctx, tx, tasks.All(), spec, workflow.StartOptions{})
			_ = v // v.ID and every v.Steps[i].TaskID are known now; the tasks go out when tx commits
			return err
		})
	}
	_ = start
	// Output:
	// fetch []
	// a [fetch]
	// b [fetch]
	// join [a b]
	// publish [join]
}
