package config_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/conveyor-run/conveyor/internal/config"
)

func TestLoadRedisCluster(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		role  config.Role
		set   map[string]string
		unset []string
		want  []string // substrings of the error; none: no error
	}{
		{name: "url only", role: config.RoleWorker},
		{name: "cluster only", role: config.RoleWorker,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": "10.0.0.1:6379, 10.0.0.2:6379,redis-3.internal:7000,"}, unset: []string{"REDIS_URL"}},
		{name: "cluster with password", role: config.RoleAPI,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": "10.0.0.1:6379", "REDIS_CLUSTER_PASSWORD": "s3cret"}, unset: []string{"REDIS_URL"}},
		{name: "ipv6 seed", role: config.RoleScheduler,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": "[::1]:7000"}, unset: []string{"REDIS_URL"}},
		{name: "both set", role: config.RoleWorker,
			set:  map[string]string{"REDIS_CLUSTER_ADDRS": "10.0.0.1:6379"},
			want: []string{"REDIS_URL, REDIS_CLUSTER_ADDRS: set only one of them"}},
		{name: "both set, even for migrate", role: config.RoleMigrate,
			set:  map[string]string{"REDIS_CLUSTER_ADDRS": "10.0.0.1:6379"},
			want: []string{"REDIS_URL, REDIS_CLUSTER_ADDRS"}},
		{name: "neither set", role: config.RoleAPI, unset: []string{"REDIS_URL"},
			want: []string{"REDIS_URL: is required (or REDIS_CLUSTER_ADDRS for a Redis Cluster)"}},
		{name: "neither set for migrate", role: config.RoleMigrate, unset: []string{"REDIS_URL"}},
		{name: "blank cluster counts as unset", role: config.RoleWorker,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": "  "}, unset: []string{"REDIS_URL"},
			want: []string{"REDIS_URL: is required"}},
		{name: "no port", role: config.RoleWorker,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": "10.0.0.1:6379,10.0.0.2"}, unset: []string{"REDIS_URL"},
			want: []string{`REDIS_CLUSTER_ADDRS: "10.0.0.2" is not a host:port address`}},
		{name: "bad port", role: config.RoleWorker,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": "10.0.0.1:http"}, unset: []string{"REDIS_URL"},
			want: []string{`REDIS_CLUSTER_ADDRS: "10.0.0.1:http" is not a host:port address`}},
		{name: "port out of range", role: config.RoleWorker,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": "10.0.0.1:70000"}, unset: []string{"REDIS_URL"},
			want: []string{`REDIS_CLUSTER_ADDRS: "10.0.0.1:70000"`}},
		{name: "no host", role: config.RoleWorker,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": ":6379"}, unset: []string{"REDIS_URL"},
			want: []string{`REDIS_CLUSTER_ADDRS: ":6379" is not a host:port address`}},
		{name: "a URL is not an address", role: config.RoleWorker,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": "redis://10.0.0.1:6379"}, unset: []string{"REDIS_URL"},
			want: []string{"REDIS_CLUSTER_ADDRS:"}},
		{name: "only commas", role: config.RoleWorker,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": ", ,"}, unset: []string{"REDIS_URL"},
			want: []string{"REDIS_CLUSTER_ADDRS: lists no address"}},
		{name: "duplicate", role: config.RoleWorker,
			set: map[string]string{"REDIS_CLUSTER_ADDRS": "10.0.0.1:6379,10.0.0.1:6379"}, unset: []string{"REDIS_URL"},
			want: []string{`REDIS_CLUSTER_ADDRS: "10.0.0.1:6379" is listed twice`}},
		{name: "cluster password with url", role: config.RoleWorker,
			set:  map[string]string{"REDIS_CLUSTER_PASSWORD": "s3cret"},
			want: []string{"REDIS_CLUSTER_PASSWORD: is used only with REDIS_CLUSTER_ADDRS"}},
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
			c, err := config.Load(envOf(env), tc.role)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				if addrs := env["REDIS_CLUSTER_ADDRS"]; addrs != "" {
					if c.RedisURL != "" || len(c.RedisClusterAddrs) == 0 || c.RedisClusterPassword != env["REDIS_CLUSTER_PASSWORD"] {
						t.Fatalf("config = url %q, cluster %q, password %q", c.RedisURL, c.RedisClusterAddrs, c.RedisClusterPassword)
					}
				} else if c.RedisClusterAddrs != nil || c.RedisURL != env["REDIS_URL"] {
					t.Fatalf("config = url %q, cluster %q", c.RedisURL, c.RedisClusterAddrs)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestParseClusterAddrs(t *testing.T) {
	t.Parallel()
	got, err := config.ParseClusterAddrs(" 10.0.0.1:6379 ,redis-2:7000,,[::1]:7001 ")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.1:6379", "redis-2:7000", "[::1]:7001"}; !slices.Equal(got, want) {
		t.Fatalf("addrs = %q, want %q", got, want)
	}
}
