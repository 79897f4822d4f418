package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

func TestSchedulesCRUD(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t) // not a Tx: the conflict below would abort it
	r := store.NewSchedules(d)
	retry := 2
	s := store.Schedule{Name: "nightly", Spec: "0 3 * * *", Timezone: "Europe/Paris", TaskType: "system:ping",
		Payload: []byte(`{"sleep_ms": 5}`), MaxRetry: &retry, Enabled: true}
	if err := r.Create(ctx, &s); err != nil {
		t.Fatal(err)
	}
	if s.ID == 0 || s.CreatedAt.IsZero() || s.LastFiredAt != nil || *s.MaxRetry != 2 {
		t.Fatalf("created = %+v", s)
	}
	dup := store.Schedule{Name: "nightly", Spec: "@daily", Timezone: "UTC", TaskType: "system:ping"}
	if err := r.Create(ctx, &dup); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate name: err = %v", err)
	}

	s.Spec, s.Enabled, s.Payload = "0 4 * * *", false, nil
	if err := r.Update(ctx, &s); err != nil {
		t.Fatal(err)
	}
	got, err := r.Get(ctx, "nightly")
	if err != nil || got.Spec != "0 4 * * *" || got.Enabled || got.Payload != nil {
		t.Fatalf("after update: %+v, %v", got, err)
	}

	tick := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	if err := r.MarkFired(ctx, "nightly", tick, "schedule:nightly:1"); err != nil {
		t.Fatal(err)
	}
	// An older tick never moves the record back.
	if err := r.MarkFired(ctx, "nightly", tick.Add(-time.Hour), "schedule:nightly:0"); err != nil {
		t.Fatal(err)
	}
	got, _ = r.Get(ctx, "nightly")
	if got.LastFiredAt == nil || !got.LastFiredAt.Equal(tick) || got.LastTaskID != "schedule:nightly:1" {
		t.Fatalf("last fired = %v %q", got.LastFiredAt, got.LastTaskID)
	}
	if !got.UpdatedAt.Equal(s.UpdatedAt) {
		t.Errorf("MarkFired moved updated_at %v → %v", s.UpdatedAt, got.UpdatedAt)
	}

	list, err := r.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if err := r.Delete(ctx, "nightly"); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx, "nightly"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: err = %v", err)
	}
	if _, err := r.Get(ctx, "nightly"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get deleted: err = %v", err)
	}
}

// A committed change to a schedule's definition notifies the watchers; a
// fire record does not.
func TestWatchSchedulesNotifiesDefinitionChanges(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, url := testenv.DB(t)
	ch, err := store.WatchSchedules(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := store.NewSchedules(d)
	s := store.Schedule{Name: "w", Spec: "@daily", Timezone: "UTC", TaskType: "system:ping", Enabled: true}
	if err := r.Create(ctx, &s); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no notification after insert")
	}
	if err := r.MarkFired(ctx, "w", time.Now(), "x"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("notified for a fire record")
	case <-time.After(300 * time.Millisecond):
	}
}
