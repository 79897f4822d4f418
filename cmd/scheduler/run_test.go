package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The scheduler refuses to start on bad configuration or a bad schedules
// file, with an error naming the variable or the entry and its field. These
// checks run before any connection is made.
func TestRunRejectsBadConfigAndSchedules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"lease ttl", map[string]string{"SCHEDULER_LEASE_TTL": "soon"}, []string{"SCHEDULER_LEASE_TTL"}},
		{"sync interval", map[string]string{"SCHEDULE_SYNC_INTERVAL": "1ms"}, []string{"SCHEDULE_SYNC_INTERVAL"}},
		{"catch-up window", map[string]string{"SCHEDULER_CATCHUP_WINDOW": "400h"}, []string{"SCHEDULER_CATCHUP_WINDOW"}},
		{"metrics addr", map[string]string{"METRICS_ADDR": "nowhere"}, []string{"METRICS_ADDR"}},
		{"missing file", map[string]string{"SCHEDULES_FILE": filepath.Join(dir, "absent.yaml")}, []string{"absent.yaml"}},
		{"bad spec", map[string]string{"SCHEDULES_FILE": file("spec.yaml", `
schedules:
  - {name: nightly, spec: "61 * * * *", task: system:ping}
`)}, []string{"nightly", "spec"}},
		{"unknown type", map[string]string{"SCHEDULES_FILE": file("type.yaml", `
schedules:
  - {name: mystery, spec: "@hourly", task: no:such:type}
`)}, []string{"mystery", "no:such:type"}},
		{"bad payload", map[string]string{"SCHEDULES_FILE": file("payload.yaml", `
schedules:
  - {name: welcome-nobody, spec: "@hourly", task: email:welcome, payload: {user_id: "x"}}
`)}, []string{"welcome-nobody", "payload"}},
		{"unknown timezone", map[string]string{"SCHEDULES_FILE": file("tz.yaml", `
schedules:
  - {name: mars, spec: "@daily", task: system:ping, timezone: Mars/Olympus}
`)}, []string{"mars", "timezone"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{
				"DATABASE_URL": "postgres://a@127.0.0.1:1/x?sslmode=disable",
				"REDIS_URL":    "redis://127.0.0.1:1/0",
			}
			for k, v := range tc.env {
				env[k] = v
			}
			err := run(context.Background(), nil, func(k string) string { return env[k] }, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil {
				t.Fatal("run succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}
