package config_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/config"
)

func TestAbuseLimitsAndTrustedProxies(t *testing.T) {
	t.Parallel()
	c, err := config.Load(envOf(base()), config.RoleAPI)
	if err != nil {
		t.Fatal(err)
	}
	if c.Abuse != config.DefaultAbuse() || c.TrustedProxies != nil {
		t.Fatalf("defaults: %+v, proxies %v", c.Abuse, c.TrustedProxies)
	}
	env := base()
	for k, v := range map[string]string{
		"LOGIN_ADDR_MAX": "7", "LOGIN_ADDR_WINDOW": "2m", "REGISTER_ADDR_MAX": "3", "REGISTER_ADDR_WINDOW": "24h",
		"MONITOR_MAX_FAILURES": "4", "MONITOR_ADDR_MAX": "9", "MONITOR_WINDOW": "5m",
		"PASSWORD_HASH_CONCURRENCY": "2", "PASSWORD_HASH_WAIT": "0s",
		"TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7, fd00::/8", "CORS_ALLOWED_ORIGINS": "*",
	} {
		env[k] = v
	}
	c, err = config.Load(envOf(env), config.RoleAPI)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Abuse{LoginAddrMax: 7, LoginAddrWindow: 2 * time.Minute, RegisterAddrMax: 3, RegisterAddrWindow: 24 * time.Hour,
		MonitorMaxFailures: 4, MonitorAddrMax: 9, MonitorWindow: 5 * time.Minute, HashConcurrency: 2, HashWait: 0}
	if c.Abuse != want {
		t.Fatalf("abuse = %+v, want %+v", c.Abuse, want)
	}
	wantProxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("fd00::/8")}
	if !slices.Equal(c.TrustedProxies, wantProxies) {
		t.Fatalf("proxies = %v", c.TrustedProxies)
	}
	if !slices.Equal(c.CORSAllowedOrigins, []string{"*"}) {
		t.Fatalf("origins = %v", c.CORSAllowedOrigins)
	}

	for _, tc := range []struct{ name, value, want string }{
		{"LOGIN_ADDR_MAX", "0", "LOGIN_ADDR_MAX:"},
		{"PASSWORD_HASH_CONCURRENCY", "many", "PASSWORD_HASH_CONCURRENCY:"},
		{"MONITOR_WINDOW", "10ms", "MONITOR_WINDOW:"},
		{"TRUSTED_PROXIES", "10.0.0.0/33", "TRUSTED_PROXIES:"},
		{"TRUSTED_PROXIES", "proxy.internal", "TRUSTED_PROXIES:"},
		{"TRUSTED_PROXIES", "0.0.0.0/0", "would trust every address"},
		{"CORS_ALLOWED_ORIGINS", "https://*.example.com", "wildcards inside an origin are not supported"},
		{"CLEANUP_MAX_AGE", "1h", "CLEANUP_MAX_AGE:"},
	} {
		env := base()
		env[tc.name] = tc.value
		role := config.RoleAPI
		if tc.name == "CLEANUP_MAX_AGE" {
			role = config.RoleWorker
		}
		if _, err := config.Load(envOf(env), role); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%s: err = %v, want %q", tc.name, tc.value, err, tc.want)
		}
	}
}
