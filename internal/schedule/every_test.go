package schedule

import (
	"errors"
	"testing"

	"github.com/conveyor-run/conveyor/tasks"
)

// A non-positive or sub-second @every is refused where schedules are
// compiled, which covers both the API and SCHEDULES_FILE (robfig/cron would
// silently turn it into every second).
func TestEveryIntervalMustBePositive(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		spec string
		ok   bool
	}{
		{"@every 0s", false},
		{"@every -1s", false},
		{"@every -1h", false},
		{"@every 500ms", false},
		{"@every 1s", true},
		{"@every 90s", true},
		{"@every 1h30m", true},
		{"*/5 * * * *", true},
	} {
		e := Entry{Name: "e", Spec: tc.spec, TaskType: tasks.TypeSystemPing}
		err := e.Compile(tasks.All())
		var fe tasks.FieldErrors
		switch {
		case tc.ok && err != nil:
			t.Errorf("%q: %v", tc.spec, err)
		case !tc.ok && (!errors.As(err, &fe) || fe["spec"] == ""):
			t.Errorf("%q: err = %v, want a spec error", tc.spec, err)
		}
	}
}
