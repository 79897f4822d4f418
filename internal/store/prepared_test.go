package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

func TestPreparedRunsStatementsAndSurvivesSchemaChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, p := preparedThings(t)
	for i := range 3 {
		if _, err := p.ExecContext(ctx, `INSERT INTO things (id, name) VALUES ($1, $2)`, i, fmt.Sprint("n", i)); err != nil {
			t.Fatal(err)
		}
	}
	var name string
	if err := p.GetContext(ctx, &name, `SELECT name FROM things WHERE id = $1`, 2); err != nil || name != "n2" {
		t.Fatalf("get = %q, %v", name, err)
	}
	type thing struct {
		ID   int    `db:"id"`
		Name string `db:"name"`
		Kind string `db:"kind"`
	}
	var before []thing
	const all = `SELECT * FROM things ORDER BY id`
	if err := p.SelectContext(ctx, &before, all); err != nil || len(before) != 3 {
		t.Fatalf("select = %+v, %v", before, err)
	}
	// A migration adds a column while the statement is prepared: PostgreSQL
	// refuses the cached plan, and the statement runs again unprepared.
	if _, err := d.ExecContext(ctx, `ALTER TABLE things ADD COLUMN kind TEXT NOT NULL DEFAULT 'k'`); err != nil {
		t.Fatal(err)
	}
	var after []thing
	if err := p.SelectContext(ctx, &after, all); err != nil || len(after) != 3 || after[0].Kind != "k" {
		t.Fatalf("select after ALTER = %+v, %v", after, err)
	}
	// More distinct statements than it keeps: the rest run unprepared.
	for i := range 80 {
		var n int
		if err := p.GetContext(ctx, &n, fmt.Sprintf(`SELECT count(*) + %d FROM things`, i)); err != nil || n != 3+i {
			t.Fatalf("statement %d = %d, %v", i, n, err)
		}
	}
}

// TestPreparedInTx: statements run prepared inside transactions, which
// commit and roll back as usual; after a schema change a stale statement
// fails its transaction once and is prepared again for the next.
func TestPreparedInTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, p := preparedThings(t)
	inTx := func(commit bool, f func(q store.Querier) error) error {
		t.Helper()
		tx, err := d.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := f(p.InTx(tx)); err != nil {
			_ = tx.Rollback()
			return err
		}
		if commit {
			return tx.Commit()
		}
		return tx.Rollback()
	}
	for i := range 4 {
		err := inTx(i != 2, func(q store.Querier) error {
			_, err := q.ExecContext(ctx, `INSERT INTO things (id, name) VALUES ($1, $2)`, i, fmt.Sprint("n", i))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	type thing struct {
		ID   int    `db:"id"`
		Name string `db:"name"`
		Kind string `db:"kind"`
	}
	var got []thing
	selectAll := func(q store.Querier) error {
		got = nil
		return q.SelectContext(ctx, &got, `SELECT * FROM things ORDER BY id`)
	}
	if err := inTx(false, selectAll); err != nil || fmt.Sprint(got) != "[{0 n0 } {1 n1 } {3 n3 }]" {
		t.Fatalf("select = %v, %v; want the committed rows", got, err)
	}
	if _, err := d.ExecContext(ctx, `ALTER TABLE things ADD COLUMN kind TEXT NOT NULL DEFAULT 'k'`); err != nil {
		t.Fatal(err)
	}
	// The connection that prepared the statement refuses it now (another
	// one of the pool prepares it afresh): retry until both have been seen.
	var stale, fresh bool
	for range 20 {
		err := inTx(false, selectAll)
		switch {
		case err != nil:
			stale = true
		case fmt.Sprint(got) == "[{0 n0 k} {1 n1 k} {3 n3 k}]":
			fresh = true
		default:
			t.Fatalf("select = %v", got)
		}
		if fresh && stale {
			break
		}
	}
	if !fresh {
		t.Fatal("the statement never ran again after the schema change")
	}
}

// preparedThings returns a test database with an empty table things (id,
// name) and a Prepared over it, closed when the test ends.
func preparedThings(t *testing.T) (*sqlx.DB, *store.Prepared) {
	t.Helper()
	d, _ := testenv.DB(t)
	p := store.NewPrepared(d)
	t.Cleanup(func() { _ = p.Close() })
	if _, err := d.ExecContext(context.Background(), `CREATE TABLE things (id INT PRIMARY KEY, name TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return d, p
}
