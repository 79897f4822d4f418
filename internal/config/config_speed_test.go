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
	if c.PollInterval != config.DefaultPollInterval {
		t.Errorf("default poll interval = %s, want %s", c.PollInterval, config.DefaultPollInterval)
	}
	c, err = config.Load(opsEnv(map[string]string{"WORKER_POLL_INTERVAL": "250ms"}), config.RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	if c.PollInterval != 250*time.Millisecond {
		t.Errorf("poll interval = %s, want 250ms", c.PollInterval)
	}
	for _, bad := range []string{"0", "500us", "2m", "soon"} {
		_, err := config.Load(opsEnv(map[string]string{"WORKER_POLL_INTERVAL": bad}), config.RoleWorker)
		if err == nil || !strings.Contains(err.Error(), "WORKER_POLL_INTERVAL") {
			t.Errorf("WORKER_POLL_INTERVAL=%s: error = %v, want one naming the variable", bad, err)
		}
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
