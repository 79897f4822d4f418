package workflow

import (
	"context"
	"fmt"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// BenchmarkRecordGroupOutcomes records a chord's group in batches of 16
// successes, the way the Advancer does: "one-statement" as it does now,
// "stepwise" in a transaction of a statement per step of the advancement.
// One op is one batch; the PostgreSQL time is in it, the round trips too.
func BenchmarkRecordGroupOutcomes(b *testing.B) {
	d, _ := testenv.DB(b)
	ctx := context.Background()
	prepared := store.NewPrepared(d)
	defer prepared.Close()
	const batch = 16
	paths := map[string]func(reports []Report) error{
		"one-statement": func(reports []Report) error {
			_, err := finishSucceeded(ctx, store.NewWorkflows(prepared), reports)
			return err
		},
		"stepwise": func(reports []Report) error {
			return db.InTx(ctx, d, func(tx *sqlx.Tx) error {
				_, err := finishBatch(ctx, store.NewWorkflows(prepared.InTx(tx)), reports)
				return err
			})
		},
	}
	for _, name := range []string{"stepwise", "one-statement"} {
		b.Run(name, func(b *testing.B) {
			record := paths[name]
			var wf string
			var next, size int
			for b.Loop() {
				if next+batch > size {
					b.StopTimer()
					size = 4000
					wf, next = startGroup(b, d, size), 0
					b.StartTimer()
				}
				reports := make([]Report, batch)
				for i := range reports {
					reports[i] = Report{Ref: tasks.StepRef{WorkflowID: wf, StepID: fmt.Sprintf("g%d", next+i)},
						Outcome: tasks.StepOutcome{Succeeded: true, Result: []byte(`{"ok":true}`)}}
				}
				next += batch
				if err := record(reports); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// startGroup starts a chord of n pings and a callback.
func startGroup(b *testing.B, d *sqlx.DB, n int) string {
	parts := make([]Part, n)
	for i := range parts {
		parts[i] = Task(fmt.Sprintf("g%d", i), tasks.SystemPingPayload{})
	}
	var v View
	err := db.InTx(context.Background(), d, func(tx *sqlx.Tx) error {
		var err error
		v, err = Start(context.Background(), tx, tasks.All(), Chord(Group(parts...), Task("callback", tasks.SystemPingPayload{})).Spec(), StartOptions{})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	// As autovacuum would have: plans fit the tables' sizes.
	if _, err := d.Exec(`ANALYZE workflows, workflow_steps, workflow_edges, outbox`); err != nil {
		b.Fatal(err)
	}
	return v.ID
}
