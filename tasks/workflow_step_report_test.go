package tasks_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/conveyor-run/conveyor/internal/testenv"
	"github.com/conveyor-run/conveyor/tasks"
)

// flakyReporter is a StepReporter (and StepStateReader: every step is
// enqueued, without parents) whose first fail reports fail.
type flakyReporter struct {
	mu       sync.Mutex
	fail     int
	outcomes []tasks.StepOutcome // every report, failed ones included
}

func (r *flakyReporter) StepState(context.Context, tasks.StepRef) (string, bool, error) {
	return "enqueued", false, nil
}

func (r *flakyReporter) StepStarted(tasks.StepRef, time.Time) {}

func (r *flakyReporter) StepFinished(_ context.Context, _ tasks.StepRef, o tasks.StepOutcome) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outcomes = append(r.outcomes, o)
	if len(r.outcomes) <= r.fail {
		return errors.New("postgres is down")
	}
	return nil
}

func (r *flakyReporter) reports() []tasks.StepOutcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tasks.StepOutcome(nil), r.outcomes...)
}

func stepTask(t *testing.T, opts ...asynq.Option) *asynq.Task {
	t.Helper()
	task, err := tasks.NewWithHeaders(tasks.SystemPingPayload{Add: 1},
		map[string]string{tasks.HeaderWorkflowStep: "0190a6c4-0000-7000-8000-000000000001:a"}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// A succeeded step's task is not kept in Redis (a ping's retention), so it
// must not complete before its outcome is recorded: when the report fails,
// asynq runs the task again, without spending one of its retries, and the
// second report is recorded; nothing of the task is left in Redis.
func TestStepOutcomeNotRecordedRunsTheTaskAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, _ := testenv.DB(t)
	log := testenv.Logger(t)
	redisURL, rdb := testenv.Redis(t)
	rep := &flakyReporter{fail: 1}
	mux := tasks.NewMux(tasks.All(), tasks.Deps{DB: d, Log: log, Workflows: rep}, nil)
	opt, err := asynq.ParseRedisURI(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := asynq.NewServer(opt, asynq.Config{Concurrency: 1, Queues: map[string]int{"default": 1},
		LogLevel: asynq.FatalLevel, IsFailure: tasks.IsFailure,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return 10 * time.Millisecond }})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	client := asynq.NewClientFromRedisClient(rdb)
	info, err := client.EnqueueContext(ctx, stepTask(t, asynq.MaxRetry(1)))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(rep.reports()) >= 2 },
		"the step's task never ran again after its outcome was not recorded (%d reports)", len(rep.reports()))
	for i, o := range rep.reports() {
		if !o.Succeeded || o.Retried != 0 {
			t.Errorf("report %d = %+v, want succeeded with no retry spent", i, o)
		}
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	testenv.Eventually(t, 10*time.Second, func() bool {
		_, err := insp.GetTaskInfo("default", info.ID)
		return errors.Is(err, asynq.ErrTaskNotFound)
	}, "the step's task is still in Redis once its outcome was recorded")
	if n := len(rep.reports()); n != 2 {
		t.Errorf("%d reports, want 2", n)
	}
}

// On the task's last attempt asynq would archive it on any error, so the
// worker tries the report again in its slot until it is recorded, or
// gives up (ErrStepNotRecorded) when the task's context ends.
func TestStepOutcomeOnTheLastAttemptIsTriedAgain(t *testing.T) {
	t.Parallel()
	d, _ := testenv.DB(t)
	log := testenv.Logger(t)

	rep := &flakyReporter{fail: 2}
	mux := tasks.NewMux(tasks.All(), tasks.Deps{DB: d, Log: log, Workflows: rep}, nil)
	// Outside a worker, an attempt is the first and the last (no retries).
	if err := mux.ProcessTask(context.Background(), stepTask(t)); err != nil {
		t.Fatalf("ProcessTask = %v, want the third report recorded", err)
	}
	if n := len(rep.reports()); n != 3 {
		t.Errorf("%d reports, want 3", n)
	}

	down := &flakyReporter{fail: 1 << 30}
	mux = tasks.NewMux(tasks.All(), tasks.Deps{DB: d, Log: log, Workflows: down}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := mux.ProcessTask(ctx, stepTask(t)); !errors.Is(err, tasks.ErrStepNotRecorded) {
		t.Fatalf("ProcessTask = %v, want ErrStepNotRecorded once the task's context ended", err)
	}
	if tasks.IsFailure(tasks.ErrStepNotRecorded) || !tasks.IsFailure(errors.New("boom")) {
		t.Error("IsFailure: a step outcome not recorded must spend no retry; any other error must")
	}
}
