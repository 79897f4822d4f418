package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/config"
)

func TestHashPassword(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DASH_PW": "from-the-env"}
	getenv := func(k string) string { return env[k] }
	cases := []struct {
		name, stdin string
		args        []string
		want        string // the password the hash must match; "" = an error
	}{
		{"stdin", "correct horse\n", nil, "correct horse"},
		{"stdin without newline", "battery-staple", nil, "battery-staple"},
		{"env", "", []string{"--password-env", "DASH_PW"}, "from-the-env"},
		{"too short", "short\n", nil, ""},
		{"empty env", "", []string{"--password-env", "UNSET"}, ""},
		{"bad flag", "", []string{"--salt"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := runHashPassword(tc.args, getenv, strings.NewReader(tc.stdin), &out)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("no error, printed %q", out.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			hash := strings.TrimSpace(out.String())
			if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(tc.want)); err != nil {
				t.Fatalf("hash %q does not match the password: %v", hash, err)
			}
			// The output is usable as is in MONITOR_USERS.
			cfg, err := config.Load(func(k string) string {
				return map[string]string{
					"DATABASE_URL": "postgres://a@127.0.0.1/x", "REDIS_URL": "redis://127.0.0.1:1/0",
					"DEV_MODE": "true", "MONITOR_USERS": "ops:" + hash + ":ro",
				}[k]
			}, config.RoleAPI)
			if err != nil {
				t.Fatalf("MONITOR_USERS with the printed hash: %v", err)
			}
			if u := cfg.MonitorUsers; len(u) != 1 || u[0].Name != "ops" || !u[0].ReadOnly || u[0].Hash != hash {
				t.Fatalf("MonitorUsers = %+v", u)
			}
		})
	}
}
