package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

func TestRunRejectsBadConfig(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"nothing set", map[string]string{}, "DATABASE_URL: is required"},
		{"bad redis", map[string]string{"DATABASE_URL": "postgres://a@127.0.0.1/x", "REDIS_URL": "memcached://x", "API_TOKEN": "0123456789abcdef"}, "REDIS_URL"},
		{"bad addr", map[string]string{"DATABASE_URL": "postgres://a@127.0.0.1/x", "REDIS_URL": "redis://127.0.0.1:1", "API_TOKEN": "0123456789abcdef", "HTTP_ADDR": "nowhere"}, "HTTP_ADDR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			err := run(context.Background(), []string{"api"}, func(k string) string { return tc.env[k] }, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %s", err, tc.want)
			}
		})
	}
}

func TestRunUnknownCommand(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"api", "frobnicate"}, func(string) string { return "" }, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), `unknown command "frobnicate"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	_, url := testenv.DB(t) // already migrated from the template: nothing left to apply
	var out bytes.Buffer
	env := map[string]string{"DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:1/0"}
	if err := run(context.Background(), []string{"api", "migrate"}, func(k string) string { return env[k] }, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "migrations applied: 0") {
		t.Fatalf("output = %q", out.String())
	}
}
