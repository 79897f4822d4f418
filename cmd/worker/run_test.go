package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunRejectsBadConfig(t *testing.T) {
	t.Parallel()
	ok := map[string]string{"DATABASE_URL": "postgres://a@127.0.0.1/x", "REDIS_URL": "redis://127.0.0.1:1/0"}
	cases := []struct {
		key, value, want string
	}{
		{"WORKER_QUEUES", "critical=0", "WORKER_QUEUES"},
		{"WORKER_CONCURRENCY", "-3", "WORKER_CONCURRENCY"},
		{"METRICS_ADDR", "no-port", "METRICS_ADDR"},
		{"RETRY_BASE", "fast", "RETRY_BASE"},
		{"SMTP_URL", "ftp://mail", "SMTP_URL"},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{tc.key: tc.value}
			for k, v := range ok {
				env[k] = v
			}
			err := run(context.Background(), nil, func(k string) string { return env[k] }, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %s", err, tc.want)
			}
		})
	}
}
