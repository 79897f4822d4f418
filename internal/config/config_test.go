package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/config"
)

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func base() map[string]string {
	return map[string]string{
		"DATABASE_URL": "postgres://u:p@127.0.0.1:5432/db?sslmode=disable",
		"REDIS_URL":    "redis://127.0.0.1:6379/0",
		"API_TOKEN":    "0123456789abcdef0123",
		"JWT_SECRET":   "0123456789abcdef0123456789abcdef",
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(envOf(base()), config.RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" || c.MetricsAddr != "127.0.0.1:9091" || c.Concurrency != 10 ||
		c.LogFormat != "text" || c.LogLevel != "info" || c.BodyLimit != 1<<20 || c.ShutdownTimeout != 30*time.Second {
		t.Fatalf("defaults = %+v", c)
	}
	if c.Queues["critical"] != 6 || c.Queues["default"] != 3 || c.Queues["low"] != 1 {
		t.Fatalf("queues = %v", c.Queues)
	}
	s, _ := config.Load(envOf(base()), config.RoleScheduler)
	if s.MetricsAddr != "127.0.0.1:9092" {
		t.Fatalf("scheduler metrics addr = %s", s.MetricsAddr)
	}
}

func TestLoadErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		role  config.Role
		set   map[string]string
		unset []string
		want  string
	}{
		{"missing database", config.RoleWorker, nil, []string{"DATABASE_URL"}, "DATABASE_URL: is required"},
		{"database scheme", config.RoleWorker, map[string]string{"DATABASE_URL": "mysql://x/y"}, nil, "DATABASE_URL: scheme"},
		{"missing redis", config.RoleWorker, nil, []string{"REDIS_URL"}, "REDIS_URL: is required"},
		{"redis scheme", config.RoleWorker, map[string]string{"REDIS_URL": "http://x:1"}, nil, "REDIS_URL: scheme"},
		{"redis db", config.RoleWorker, map[string]string{"REDIS_URL": "redis://x:1/abc"}, nil, "REDIS_URL: database"},
		{"sentinel without master", config.RoleWorker, map[string]string{"REDIS_URL": "redis-sentinel://a:1,b:2"}, nil, "REDIS_URL: needs ?master"},
		{"jwt secret missing", config.RoleAPI, nil, []string{"JWT_SECRET"}, "JWT_SECRET: is required"},
		{"jwt secret short", config.RoleAPI, map[string]string{"JWT_SECRET": "too-short"}, nil, "JWT_SECRET: must be at least 32 bytes"},
		{"cors origin", config.RoleAPI, map[string]string{"CORS_ALLOWED_ORIGINS": "app.example.com"}, nil, "CORS_ALLOWED_ORIGINS:"},
		{"cors wildcard mixed", config.RoleAPI, map[string]string{"CORS_ALLOWED_ORIGINS": "*,https://a.example"}, nil, "CORS_ALLOWED_ORIGINS:"},
		{"api token short", config.RoleAPI, map[string]string{"API_TOKEN": "short"}, nil, "API_TOKEN: must be at least"},
		{"http addr", config.RoleAPI, map[string]string{"HTTP_ADDR": "8080"}, nil, "HTTP_ADDR:"},
		{"concurrency", config.RoleWorker, map[string]string{"WORKER_CONCURRENCY": "zero"}, nil, "WORKER_CONCURRENCY:"},
		{"queues weight", config.RoleWorker, map[string]string{"WORKER_QUEUES": "critical=x"}, nil, "WORKER_QUEUES: weight"},
		{"queues dup", config.RoleWorker, map[string]string{"WORKER_QUEUES": "a=1,a=2"}, nil, "WORKER_QUEUES: queue \"a\" is listed twice"},
		{"log format", config.RoleWorker, map[string]string{"LOG_FORMAT": "xml"}, nil, "LOG_FORMAT:"},
		{"log level", config.RoleWorker, map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL:"},
		{"bool", config.RoleAPI, map[string]string{"AUTO_MIGRATE": "maybe"}, nil, "AUTO_MIGRATE:"},
		{"duration", config.RoleWorker, map[string]string{"SHUTDOWN_TIMEOUT": "soon"}, nil, "SHUTDOWN_TIMEOUT:"},
		{"body limit", config.RoleAPI, map[string]string{"BODY_LIMIT": "-1"}, nil, "BODY_LIMIT:"},
		{"smtp", config.RoleWorker, map[string]string{"SMTP_URL": "http://mail"}, nil, "SMTP_URL:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := base()
			for k, v := range tc.set {
				env[k] = v
			}
			for _, k := range tc.unset {
				delete(env, k)
			}
			_, err := config.Load(envOf(env), tc.role)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans several lines: %q", err)
			}
		})
	}
}

func TestLoadParsesValues(t *testing.T) {
	t.Parallel()
	env := base()
	env["WORKER_QUEUES"] = "high=5, low"
	env["BODY_LIMIT"] = "512K"
	env["REDIS_URL"] = "redis-sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379?master=mymaster"
	env["LOG_FORMAT"] = "JSON"
	c, err := config.Load(envOf(env), config.RoleAPI)
	if err != nil {
		t.Fatal(err)
	}
	if c.Queues["high"] != 5 || c.Queues["low"] != 1 || len(c.Queues) != 2 {
		t.Fatalf("queues = %v", c.Queues)
	}
	if c.BodyLimit != 512<<10 || c.LogFormat != "json" {
		t.Fatalf("config = %+v", c)
	}
	if names := c.QueueNames(); strings.Join(names, ",") != "high,low" {
		t.Fatalf("QueueNames = %v", names)
	}
}

func TestMigrateRoleNeedsNoToken(t *testing.T) {
	t.Parallel()
	env := base()
	delete(env, "API_TOKEN")
	delete(env, "REDIS_URL") // migrate, createuser and createkey use only the database
	if _, err := config.Load(envOf(env), config.RoleMigrate); err != nil {
		t.Fatal(err)
	}
	env["REDIS_URL"] = "http://not-redis"
	if _, err := config.Load(envOf(env), config.RoleMigrate); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Fatalf("a bad REDIS_URL, even unused: err = %v", err)
	}
}
