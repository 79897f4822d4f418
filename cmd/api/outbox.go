package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/conveyor-run/conveyor/internal/store"
)

// runOutbox runs the outbox commands for dead rows (rows that could never
// become a task; conveyor_outbox_dead counts them):
//
//	api outbox dead [--limit N]          list them with their reasons
//	api outbox requeue (--id ID | --all) make them due again
//
// Requeue after deploying the fix (the task type is back, the payload
// validates again): the relay picks the rows up within a second, with a
// fresh attempt count.
func runOutbox(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("outbox: give a subcommand: dead or requeue\n%s", usage)
	}
	sub := args[0]
	fs := flag.NewFlagSet("api outbox "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		limit = fs.Int("limit", 100, "dead: how many rows to list, oldest first")
		id    = fs.String("id", "", "requeue: the row to requeue")
		all   = fs.Bool("all", false, "requeue: every dead row")
	)
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("outbox %s: %w\n%s", sub, err, usage)
	}
	database, err := openAdminDB(ctx, getenv)
	if err != nil {
		return err
	}
	defer database.Close()
	ob := store.NewOutbox(database)

	switch sub {
	case "dead":
		if *limit < 1 || *limit > 10000 {
			return errors.New("outbox dead: --limit must be between 1 and 10000")
		}
		rows, err := ob.Dead(ctx, *limit)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tTASK TYPE\tATTEMPTS\tDEAD SINCE\tREASON")
		for _, r := range rows {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", r.ID, r.TaskType, r.Attempts, r.DeadAt.UTC().Format(time.RFC3339),
				strings.ReplaceAll(r.LastError, "\n", " "))
		}
		if err := w.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%d dead outbox rows\n", len(rows))
		return nil
	case "requeue":
		if (*id == "") == !*all {
			return errors.New("outbox requeue: give either --id ID or --all")
		}
		n, err := ob.RequeueDead(ctx, *id)
		if err != nil {
			return err
		}
		if *id != "" && n == 0 {
			return fmt.Errorf("outbox requeue: no dead row with id %q", *id)
		}
		fmt.Fprintf(stdout, "%d outbox rows requeued\n", n)
		return nil
	}
	return fmt.Errorf("outbox: unknown subcommand %q\n%s", sub, usage)
}
