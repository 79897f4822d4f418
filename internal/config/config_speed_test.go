package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/config"
)

func TestWorkerPollInterval(t *testing.T) {
	t.Parallel()
	c, err := config.Load(opsEnv(nil), config.RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	if c.PollInterval != config.DefaultPollInterval || !c.Wakeups {
		t.Errorf("default poll interval = %s, wake-ups %v; want %s with wake-ups", c.PollInterval, c.Wakeups, config.DefaultPollInterval)
	}
	c, err = config.Load(opsEnv(map[string]string{"WORKER_POLL_INTERVAL": "250ms"}), config.RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	if c.PollInterval != 250*time.Millisecond {
		t.Errorf("poll interval = %s, want 250ms", c.PollInterval)
	}
	// Polling only (no wake-ups) allows up to a minute; a wake-up wait at
	// most MaxWakePollInterval.
	c, err = config.Load(opsEnv(map[string]string{"WORKER_POLL_INTERVAL": "30s", "WORKER_WAKEUPS": "false"}), config.RoleWorker)
	if err != nil || c.Wakeups || c.PollInterval != 30*time.Second {
		t.Errorf("polling 30s: %+v, %v", c.PollInterval, err)
	}
	for _, bad := range []map[string]string{
		{"WORKER_POLL_INTERVAL": "0"},
		{"WORKER_POLL_INTERVAL": "500us"},
		{"WORKER_POLL_INTERVAL": "2m", "WORKER_WAKEUPS": "false"},
		{"WORKER_POLL_INTERVAL": "soon"},
		{"WORKER_POLL_INTERVAL": "6s"},
	} {
		_, err := config.Load(opsEnv(bad), config.RoleWorker)
		if err == nil || !strings.Contains(err.Error(), "WORKER_POLL_INTERVAL") {
			t.Errorf("%v: error = %v, want one naming WORKER_POLL_INTERVAL", bad, err)
		}
	}
	if _, err := config.Load(opsEnv(map[string]string{"WORKER_WAKEUPS": "maybe"}), config.RoleWorker); err == nil ||
		!strings.Contains(err.Error(), "WORKER_WAKEUPS") {
		t.Errorf("WORKER_WAKEUPS=maybe: error = %v", err)
	}
}

func TestAPISidePortIsOptional(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DEV_MODE": "true"}
	c, err := config.Load(opsEnv(env), config.RoleAPI)
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsAddr != "" {
		t.Errorf("api MetricsAddr = %q, want none by default", c.MetricsAddr)
	}
	env["METRICS_ADDR"] = "127.0.0.1:9090"
	if c, err = config.Load(opsEnv(env), config.RoleAPI); err != nil || c.MetricsAddr != "127.0.0.1:9090" {
		t.Errorf("api MetricsAddr = %q, err %v", c.MetricsAddr, err)
	}
	env["METRICS_ADDR"] = "nope"
	if _, err := config.Load(opsEnv(env), config.RoleAPI); err == nil || !strings.Contains(err.Error(), "METRICS_ADDR") {
		t.Errorf("bad METRICS_ADDR: error = %v", err)
	}
}

func TestDatabaseMaxConns(t *testing.T) {
	t.Parallel()
	c, err := config.Load(opsEnv(nil), config.RoleWorker)
	if err != nil || c.DatabaseMaxConns != config.DefaultDatabaseMaxConns {
		t.Fatalf("default pool = %d, %v; want %d", c.DatabaseMaxConns, err, config.DefaultDatabaseMaxConns)
	}
	c, err = config.Load(opsEnv(map[string]string{"DATABASE_MAX_CONNS": "50"}), config.RoleWorker)
	if err != nil || c.DatabaseMaxConns != 50 {
		t.Fatalf("DATABASE_MAX_CONNS=50: %d, %v", c.DatabaseMaxConns, err)
	}
	for _, bad := range []string{"0", "1001", "many"} {
		_, err := config.Load(opsEnv(map[string]string{"DATABASE_MAX_CONNS": bad}), config.RoleWorker)
		if err == nil || !strings.Contains(err.Error(), "DATABASE_MAX_CONNS") {
			t.Errorf("DATABASE_MAX_CONNS=%s: error = %v", bad, err)
		}
	}
}

// The api and the worker collect garbage less often than Go's default
// unless GOGC says otherwise (then the runtime has applied GOGC itself); the
// other roles keep the runtime's.
func TestAPIGCPercent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		role config.Role
		env  map[string]string
		want int
	}{
		{config.RoleAPI, map[string]string{"DEV_MODE": "true"}, config.DefaultGCPercent},
		{config.RoleWorker, nil, config.DefaultGCPercent},
		{config.RoleWorker, map[string]string{"GOGC": "200"}, 0},
		{config.RoleAPI, map[string]string{"DEV_MODE": "true", "GOGC": "100"}, 0},
		{config.RoleAPI, map[string]string{"DEV_MODE": "true", "GOGC": "off"}, 0},
		{config.RoleScheduler, nil, 0},
	} {
		c, err := config.Load(opsEnv(tc.env), tc.role)
		if err != nil {
			t.Fatal(err)
		}
		if c.GCPercent != tc.want {
			t.Errorf("%s with %v: GCPercent = %d, want %d", tc.role, tc.env, c.GCPercent, tc.want)
		}
	}
}
