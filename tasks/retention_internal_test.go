package tasks

import (
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// The worker writes a result only where something of the task is kept.
func TestKeepsResult(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		declared time.Duration
		headers  map[string]string
		want     bool
	}{
		{"type keeps a day", 24 * time.Hour, nil, true},
		{"type declares nothing: the default keeps it", 0, nil, true},
		{"type keeps nothing", NoRetention, nil, false},
		{"type keeps nothing, the caller keeps this one", NoRetention, map[string]string{HeaderKeepResult: "1"}, true},
		// Its result goes to PostgreSQL through the step hook instead.
		{"type keeps nothing, a workflow step", NoRetention, map[string]string{HeaderWorkflowStep: "wf:a"}, false},
		{"type keeps nothing, other headers", NoRetention, map[string]string{HeaderRequestID: "r1"}, false},
	} {
		task := asynq.NewTaskWithHeaders("test:x", nil, tc.headers)
		if got := keepsResult(tc.declared, task); got != tc.want {
			t.Errorf("%s: keepsResult = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRegistryRetention(t *testing.T) {
	t.Parallel()
	r := All()
	step := map[string]string{HeaderWorkflowStep: "wf:a"}
	for _, tc := range []struct {
		typ     string
		headers map[string]string
		want    time.Duration
	}{
		{TypeSystemPing, nil, 0},
		{TypeSystemPing, step, 0}, // a step's task is kept as its type says: its outcome is in PostgreSQL
		{TypeEmailWelcome, nil, 24 * time.Hour},
		{TypeEmailOrderConfirmation, nil, 24 * time.Hour},
		{TypeOrderProcess, nil, 24 * time.Hour},
		{TypeMaintenanceCleanup, step, 7 * 24 * time.Hour},
		{"test:unknown", nil, 72 * time.Hour}, // the default given
	} {
		if got := r.Retention(tc.typ, tc.headers, 72*time.Hour); got != tc.want {
			t.Errorf("Retention(%s, %v) = %s, want %s", tc.typ, tc.headers, got, tc.want)
		}
	}
}
