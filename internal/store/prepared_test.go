package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

func TestPreparedRunsStatementsAndSurvivesSchemaChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	p := store.NewPrepared(d)
	t.Cleanup(func() { _ = p.Close() })
	if _, err := d.ExecContext(ctx, `CREATE TABLE things (id INT PRIMARY KEY, name TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
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
