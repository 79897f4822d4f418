package schedule

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/tasks"
)

// RowsFunc lists the schedules table (store.Schedules.List).
type RowsFunc func(ctx context.Context) ([]store.Schedule, error)

// Syncer merges the two sources, the file and the schedules table, into the
// engine's entries. Database rows that do not compile, or that reuse a file
// entry's name, are skipped and logged (once per version of the row); the
// other entries keep firing.
type Syncer struct {
	rows   RowsFunc
	reg    *tasks.Registry
	engine *Engine
	log    *slog.Logger
	obs    Observer

	mu     sync.Mutex
	file   []*Entry
	logged map[string]string // name → the row version whose problem was logged
}

// NewSyncer returns a syncer feeding engine; obs may be nil.
func NewSyncer(rows RowsFunc, reg *tasks.Registry, engine *Engine, log *slog.Logger, obs Observer) *Syncer {
	if obs == nil {
		obs = nopObserver{}
	}
	return &Syncer{rows: rows, reg: reg, engine: engine, log: log, obs: obs, logged: map[string]string{}}
}

// ConflictError lists names defined both in the file and in the table.
type ConflictError struct{ Names []string }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("schedules defined both in SCHEDULES_FILE and in the schedules table: %v (rename or delete one)", e.Names)
}

// Start loads the table with file entries and fails, changing nothing, if
// a name is defined in both: the scheduler refuses to start on an ambiguous
// schedule.
func (s *Syncer) Start(ctx context.Context, file []*Entry) error {
	return s.SetFile(ctx, file)
}

// SetFile replaces the file entries (a SIGHUP reload) and syncs. If a file
// name is also a database schedule, it returns a *ConflictError and keeps
// the current file entries.
func (s *Syncer) SetFile(ctx context.Context, file []*Entry) error {
	rows, err := s.rows(ctx)
	if err != nil {
		return fmt.Errorf("load schedules: %w", err)
	}
	inFile := map[string]bool{}
	for _, e := range file {
		inFile[e.Name] = true
	}
	var clash []string
	for _, r := range rows {
		if inFile[r.Name] {
			clash = append(clash, r.Name)
		}
	}
	if len(clash) > 0 {
		return &ConflictError{Names: clash}
	}
	s.mu.Lock()
	s.file = file
	s.mu.Unlock()
	s.apply(rows)
	return nil
}

// Sync reads the table and hands the merged entries to the engine. On a
// database error the engine keeps its current entries.
func (s *Syncer) Sync(ctx context.Context) error {
	rows, err := s.rows(ctx)
	if err != nil {
		return fmt.Errorf("sync schedules: %w", err)
	}
	s.apply(rows)
	return nil
}

func (s *Syncer) apply(rows []store.Schedule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	entries := append([]*Entry(nil), s.file...)
	inFile := map[string]bool{}
	for _, e := range s.file {
		inFile[e.Name] = true
	}
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.Name] = true
		version := r.UpdatedAt.String()
		if inFile[r.Name] {
			if s.logged[r.Name] != version {
				s.log.Error("schedule row skipped: the name is defined in SCHEDULES_FILE, which wins",
					"schedule", r.Name, "outcome", "skipped")
				s.obs.Failed(r.Name, ErrorInvalid)
				s.logged[r.Name] = version
			}
			continue
		}
		if !r.Enabled {
			continue
		}
		en, err := FromRow(r, s.reg)
		if err != nil {
			if s.logged[r.Name] != version {
				s.log.Error("schedule row skipped: invalid", "schedule", r.Name, "outcome", "skipped", "err", err)
				s.obs.Failed(r.Name, ErrorInvalid)
				s.logged[r.Name] = version
			}
			continue
		}
		delete(s.logged, r.Name)
		entries = append(entries, en)
	}
	for name := range s.logged {
		if !seen[name] {
			delete(s.logged, name)
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	s.engine.SetEntries(entries)
}

// Run syncs every interval and whenever notify receives (a PostgreSQL
// notification; may be nil) until ctx ends. Errors are logged; the engine
// keeps its entries meanwhile.
func (s *Syncer) Run(ctx context.Context, interval time.Duration, notify <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-notify:
		}
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("schedule sync failed; keeping the current schedules", "err", err)
		}
	}
}
