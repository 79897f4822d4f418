package config_test

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/config"
)

func opsEnv(extra map[string]string) func(string) string {
	env := map[string]string{
		"DATABASE_URL": "postgres://u:p@127.0.0.1:5432/db?sslmode=disable",
		"REDIS_URL":    "redis://127.0.0.1:6379/0",
	}
	for k, v := range extra {
		env[k] = v
	}
	return func(k string) string { return env[k] }
}

func TestOperationsConfig(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	h := string(hash)

	t.Run("defaults", func(t *testing.T) {
		c, err := config.Load(opsEnv(nil), config.RoleWorker)
		if err != nil {
			t.Fatal(err)
		}
		if c.MonitorUsers != nil || c.PrometheusURL != "" || c.TaskRetention != 24*time.Hour {
			t.Errorf("defaults: users %v, prometheus %q, retention %s", c.MonitorUsers, c.PrometheusURL, c.TaskRetention)
		}
	})

	t.Run("values", func(t *testing.T) {
		c, err := config.Load(opsEnv(map[string]string{
			"MONITOR_USERS":  "alice:" + h + ", bob:" + h + ":ro",
			"PROMETHEUS_URL": "http://prometheus:9090",
			"TASK_RETENTION": "72h",
		}), config.RoleWorker)
		if err != nil {
			t.Fatal(err)
		}
		want := []config.MonitorUser{{Name: "alice", Hash: h}, {Name: "bob", Hash: h, ReadOnly: true}}
		if len(c.MonitorUsers) != 2 || c.MonitorUsers[0] != want[0] || c.MonitorUsers[1] != want[1] {
			t.Errorf("users = %+v", c.MonitorUsers)
		}
		if c.PrometheusURL != "http://prometheus:9090" || c.TaskRetention != 72*time.Hour {
			t.Errorf("prometheus %q, retention %s", c.PrometheusURL, c.TaskRetention)
		}
	})

	bad := []struct {
		name, key, value, want string
	}{
		{"no hash", "MONITOR_USERS", "alice", "MONITOR_USERS: entry 1 must be name:bcrypt-hash"},
		{"plain password", "MONITOR_USERS", "alice:secret", `MONITOR_USERS: user "alice": the password is not a bcrypt hash`},
		{"bad mode", "MONITOR_USERS", "alice:" + h + ":admin", "MONITOR_USERS: entry 1 must be"},
		{"empty name", "MONITOR_USERS", ":" + h, "MONITOR_USERS: entry 1 has an empty"},
		{"twice", "MONITOR_USERS", "a:" + h + ",a:" + h, `MONITOR_USERS: user "a" is listed twice`},
		{"prometheus scheme", "PROMETHEUS_URL", "prometheus:9090", "PROMETHEUS_URL: must be an http:// or https:// URL"},
		{"retention", "TASK_RETENTION", "a day", "TASK_RETENTION:"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := config.Load(opsEnv(map[string]string{b.key: b.value}), config.RoleWorker)
			if err == nil || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("error = %v, want it to contain %q", err, b.want)
			}
			if strings.Contains(err.Error(), h) {
				t.Errorf("the error repeats a password hash: %v", err)
			}
		})
	}
}
