package deploy

import (
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/config"
)

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Deploy      struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Volumes   []string `yaml:"volumes"`
	Ports     []string `yaml:"ports"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	StopGracePeriod string `yaml:"stop_grace_period"`
	ReadOnly        bool   `yaml:"read_only"`
}

// The processes of the image, and the role each loads its configuration as.
var composeApps = map[string]config.Role{
	"migrate":   config.RoleMigrate,
	"api":       config.RoleAPI,
	"worker":    config.RoleWorker,
	"scheduler": config.RoleScheduler,
}

// composeSecrets are the variables docker compose must require; SMTP_URL may be set empty
// (emails are then logged), so it needs only to be set.
var composeSecrets = map[string]string{
	"POSTGRES_PASSWORD": ":?",
	"REDIS_PASSWORD":    ":?",
	"JWT_SECRET":        ":?",
	"API_TOKEN":         ":?",
	"MONITOR_USERS":     ":?",
	"SMTP_URL":          "?",
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	decodeYAML(t, "docker-compose.yml", &c)
	return c
}

// composeConfig loads the configuration a compose service's process would see, with the
// operator's secrets filled in.
func composeConfig(t *testing.T, name string, s composeService) config.Config {
	t.Helper()
	secrets := fakeSecrets(t)
	env := map[string]string{}
	for k, v := range s.Environment {
		iv, err := interpolate(v, secrets)
		if err != nil {
			t.Fatalf("%s: %s: %v", name, k, err)
		}
		env[k] = iv
	}
	cfg, err := config.Load(getenv(env), composeApps[name])
	if err != nil {
		t.Fatalf("%s: the process would refuse its environment: %v", name, err)
	}
	return cfg
}

// hostPort splits host:port and fails the test on anything else.
func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	return h, p
}

func TestCompose(t *testing.T) {
	t.Parallel()
	c := loadCompose(t)
	raw := string(readFile(t, "docker-compose.yml"))

	for _, name := range []string{"redis", "postgres", "migrate", "api", "worker", "scheduler", "prometheus"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("service %s is missing", name)
		}
	}

	t.Run("secrets are required, never defaulted", func(t *testing.T) {
		used := map[string]bool{}
		for _, m := range composeVarRE.FindAllStringSubmatch(raw, -1) {
			name, op, msg := m[1], m[2], m[3]
			want, secret := composeSecrets[name]
			if !secret {
				continue
			}
			used[name] = true
			if op != want || strings.TrimSpace(msg) == "" {
				t.Errorf("%s: want ${%s%smessage}", m[0], name, want)
			}
		}
		for name := range composeSecrets {
			if !used[name] {
				t.Errorf("secret %s is not used", name)
			}
		}
		// Secret-bearing settings are references, not literals.
		for svc, s := range c.Services {
			for k, v := range s.Environment {
				switch k {
				case "JWT_SECRET", "API_TOKEN", "MONITOR_USERS", "SMTP_URL", "POSTGRES_PASSWORD", "REDISCLI_AUTH":
					if !composeVarRE.MatchString(v) || composeVarRE.ReplaceAllString(v, "") != "" {
						t.Errorf("%s: %s=%q is not a ${...} reference", svc, k, v)
					}
				case "DATABASE_URL", "REDIS_URL":
					u, err := url.Parse(composeVarRE.ReplaceAllString(v, "PASSWORD"))
					if err != nil {
						t.Errorf("%s: %s: %v", svc, k, err)
						continue
					}
					if pw, _ := u.User.Password(); pw != "PASSWORD" {
						t.Errorf("%s: %s=%q: its password is not a ${...} reference", svc, k, v)
					}
				}
			}
		}
		// With a secret missing, nothing interpolates.
		secrets := fakeSecrets(t)
		delete(secrets, "JWT_SECRET")
		if _, err := interpolate(c.Services["api"].Environment["JWT_SECRET"], secrets); err == nil {
			t.Error("api JWT_SECRET interpolates without JWT_SECRET set")
		}
	})

	t.Run("redis keeps an append-only file and never evicts", func(t *testing.T) {
		cmd := c.Services["redis"].Command
		flag := func(name string) string {
			if i := slices.Index(cmd, name); i >= 0 && i+1 < len(cmd) {
				return cmd[i+1]
			}
			return ""
		}
		if flag("--appendonly") != "yes" {
			t.Errorf("redis command %q: want --appendonly yes", cmd)
		}
		if flag("--maxmemory-policy") != "noeviction" {
			t.Errorf("redis command %q: want --maxmemory-policy noeviction (asynq's keys must not be evicted)", cmd)
		}
		if flag("--requirepass") == "" {
			t.Errorf("redis command %q: want --requirepass", cmd)
		}
		if !slices.ContainsFunc(c.Services["redis"].Volumes, func(v string) bool { return strings.HasSuffix(v, ":/data") }) {
			t.Error("redis /data (the AOF) is not on a volume")
		}
	})

	t.Run("replicas", func(t *testing.T) {
		for _, name := range []string{"worker", "scheduler"} {
			if got := c.Services[name].Deploy.Replicas; got != 2 {
				t.Errorf("%s: %d replicas, want 2", name, got)
			}
		}
	})

	t.Run("health checks", func(t *testing.T) {
		for name, s := range c.Services {
			if name == "migrate" {
				continue // runs once and exits
			}
			if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 {
				t.Errorf("%s has no healthcheck", name)
			}
		}
	})

	t.Run("app services run the image's binaries with valid configuration", func(t *testing.T) {
		image := ""
		for name, role := range composeApps {
			s := c.Services[name]
			if s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" || s.Build.Context != ".." {
				t.Errorf("%s: build %+v: want context .. and dockerfile deploy/Dockerfile", name, s.Build)
			}
			if image == "" {
				image = s.Image
			} else if s.Image != image {
				t.Errorf("%s: image %s, others use %s", name, s.Image, image)
			}
			if !s.ReadOnly {
				t.Errorf("%s: root file system is writable (read_only: true)", name)
			}
			bin := map[config.Role]string{config.RoleMigrate: "api", config.RoleAPI: "api", config.RoleWorker: "worker", config.RoleScheduler: "scheduler"}[role]
			if len(s.Command) == 0 || s.Command[0] != "/usr/local/bin/"+bin {
				t.Errorf("%s: command %q does not run /usr/local/bin/%s", name, s.Command, bin)
			}
			if s.Environment["LOG_FORMAT"] != "json" {
				t.Errorf("%s: LOG_FORMAT=%q, want json", name, s.Environment["LOG_FORMAT"])
			}
			cfg := composeConfig(t, name, s)
			if cfg.LogFormat != "json" {
				t.Errorf("%s: log format %s", name, cfg.LogFormat)
			}
			if name != "migrate" {
				if d := s.DependsOn["migrate"]; d.Condition != "service_completed_successfully" {
					t.Errorf("%s does not wait for migrate to complete", name)
				}
			}
		}
	})

	t.Run("ports, health checks and scrape targets agree with the config", func(t *testing.T) {
		var prom promConfig
		decodeYAML(t, "prometheus/prometheus.yml", &prom)
		for name, addrOf := range map[string]func(config.Config) string{
			"api":       func(c config.Config) string { return c.HTTPAddr },
			"worker":    func(c config.Config) string { return c.MetricsAddr },
			"scheduler": func(c config.Config) string { return c.MetricsAddr },
		} {
			s := c.Services[name]
			host, port := hostPort(t, addrOf(composeConfig(t, name, s)))
			if host != "0.0.0.0" && host != "" {
				t.Errorf("%s listens on %s: other containers cannot reach it", name, host)
			}
			probe, err := url.Parse(s.Healthcheck.Test[len(s.Healthcheck.Test)-1])
			if err != nil || probe.Port() != port || s.Healthcheck.Test[1] != "/usr/local/bin/healthcheck" {
				t.Errorf("%s: healthcheck %q does not probe port %s with /usr/local/bin/healthcheck", name, s.Healthcheck.Test, port)
			}
			job := prom.job("conveyor-" + name)
			if job == nil || len(job.DNSSDConfigs) != 1 || job.DNSSDConfigs[0].Port != port || !slices.Equal(job.DNSSDConfigs[0].Names, []string{name}) {
				t.Errorf("prometheus job conveyor-%s does not scrape %s:%s", name, name, port)
			}
		}
		api := c.Services["api"]
		if len(api.Ports) != 1 || !strings.HasSuffix(api.Ports[0], ":8080") {
			t.Errorf("api ports %q: want one mapping to container port 8080", api.Ports)
		}
		if p, _ := interpolate(api.Ports[0], nil); !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("api is published on %q by default, want 127.0.0.1 only", p)
		}
		if got := composeConfig(t, "api", api).PrometheusURL; got != "http://prometheus:9090" {
			t.Errorf("api PROMETHEUS_URL=%q: the dashboard charts need the compose Prometheus", got)
		}
	})

	t.Run("stop grace periods outlast the shutdowns", func(t *testing.T) {
		grace := func(name string) time.Duration {
			d, err := time.ParseDuration(c.Services[name].StopGracePeriod)
			if err != nil {
				t.Fatalf("%s: stop_grace_period: %v (docker's default 10s is too short)", name, err)
			}
			return d
		}
		w := composeConfig(t, "worker", c.Services["worker"])
		if g := grace("worker"); g <= w.ShutdownTimeout+5*time.Second {
			t.Errorf("worker stop_grace_period %s <= SHUTDOWN_TIMEOUT %s + 5s (metrics server)", g, w.ShutdownTimeout)
		}
		if g := grace("api"); g <= 15*time.Second {
			t.Errorf("api stop_grace_period %s <= its 15s drain", g)
		}
	})

	t.Run("scheduler reads the mounted schedules file", func(t *testing.T) {
		s := c.Services["scheduler"]
		file := composeConfig(t, "scheduler", s).SchedulesFile
		if !slices.Contains(s.Volumes, "./schedules.yaml:"+file+":ro") {
			t.Errorf("scheduler volumes %q do not mount ./schedules.yaml at SCHEDULES_FILE %s", s.Volumes, file)
		}
		if _, err := os.Stat("schedules.yaml"); err != nil {
			t.Error(err)
		}
	})

	t.Run("prometheus loads the mounted config and rules", func(t *testing.T) {
		p := c.Services["prometheus"]
		mounts := map[string]string{} // container path -> host path
		for _, v := range p.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 {
				mounts[parts[1]] = parts[0]
			}
		}
		var cfgPath string
		for _, a := range p.Command {
			if v, ok := strings.CutPrefix(a, "--config.file="); ok {
				cfgPath = v
			}
		}
		host, ok := mounts[cfgPath]
		if cfgPath == "" || !ok {
			t.Fatalf("prometheus --config.file=%q is not mounted (volumes %q)", cfgPath, p.Volumes)
		}
		var prom promConfig
		decodeYAML(t, filepath.Clean(host), &prom)
		if len(prom.RuleFiles) == 0 {
			t.Fatal("prometheus.yml loads no rule files")
		}
		for _, rf := range prom.RuleFiles {
			if !path.IsAbs(rf) {
				rf = path.Join(path.Dir(cfgPath), rf)
			}
			h, ok := mounts[rf]
			if !ok {
				t.Errorf("rule file %s is not mounted into prometheus", rf)
				continue
			}
			if _, err := os.Stat(h); err != nil {
				t.Errorf("rule file %s: %v", rf, err)
			}
		}
		if mounts["/etc/prometheus/alerts.yml"] != "./prometheus/alerts.yml" {
			t.Errorf("prometheus does not mount ./prometheus/alerts.yml (volumes %q)", p.Volumes)
		}
	})
}

// TestComposeConfig runs `docker-compose config` (Debian's docker-compose package) on the
// file: it must render with every secret set and refuse, naming it, when one is missing.
func TestComposeConfig(t *testing.T) {
	t.Parallel()
	bin := optionalTool(t, "DOCKER_COMPOSE", "docker-compose")
	emptyEnv := filepath.Join(t.TempDir(), "empty.env") // ignore an operator's deploy/.env
	if err := os.WriteFile(emptyEnv, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(secrets map[string]string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--env-file", emptyEnv, "-f", "docker-compose.yml", "config")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		for k, v := range secrets {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	secrets := fakeSecrets(t)
	out, err := run(secrets)
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	if !strings.Contains(out, "appendonly") || !strings.Contains(out, "JWT_SECRET: "+secrets["JWT_SECRET"]) {
		t.Errorf("rendered config lacks the interpolated values:\n%s", out)
	}
	for _, missing := range []string{"POSTGRES_PASSWORD", "JWT_SECRET", "MONITOR_USERS"} {
		s := fakeSecrets(t)
		delete(s, missing)
		out, err := run(s)
		if err == nil || !strings.Contains(out, missing) {
			t.Errorf("docker-compose config without %s: err=%v, want a failure naming it\n%s", missing, err, out)
		}
	}
}
