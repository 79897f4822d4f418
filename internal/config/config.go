// Package config turns the process environment into a typed, validated Config.
//
// It is the only package that reads environment variables (through the getenv
// function handed to Load, so tests never touch the real environment). Every
// problem is reported as one line that names the variable, so a binary started
// with bad configuration exits at once with a message an operator can act on.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Role says which binary is loading the configuration; it decides defaults
// (the side port) and which variables are required.
type Role string

// The three binaries.
const (
	RoleAPI       Role = "api"
	RoleWorker    Role = "worker"
	RoleScheduler Role = "scheduler"
	// RoleMigrate is `api migrate`, `createuser` and `createkey`: they need
	// only the database.
	RoleMigrate Role = "migrate"
)

// Config is the whole configuration of a Conveyor process. Fields that a role
// does not use keep their defaults.
type Config struct {
	Role Role

	DatabaseURL string
	// DatabaseMaxConns (DATABASE_MAX_CONNS) is the size of the process's
	// PostgreSQL connection pool, open and idle alike.
	DatabaseMaxConns int
	// Redis is either RedisURL (REDIS_URL: one server, or Sentinel) or
	// RedisClusterAddrs (REDIS_CLUSTER_ADDRS: the seed nodes of a Redis
	// Cluster, with RedisClusterPassword); never both.
	RedisURL             string
	RedisClusterAddrs    []string
	RedisClusterPassword string
	LogFormat            string // "text" or "json"
	LogLevel             string // "debug", "info", "warn" or "error"
	DevMode              bool

	// API.
	HTTPAddr    string
	APIToken    string // optional bootstrap key for the admin endpoints
	AutoMigrate bool
	BodyLimit   int64 // bytes
	// GCPercent is the garbage-collection target (Go's GOGC) of the api and
	// the worker when GOGC is not set: DefaultGCPercent. 0: GOGC is set, and
	// the Go runtime has applied it already (or the role keeps Go's default).
	GCPercent int

	// Product API: auth, CORS, login limits, outbox (api); simulated
	// fulfilment time (worker).
	JWTSecret          []byte // nil with DEV_MODE and no JWT_SECRET: the api makes a random one
	JWTTTL             time.Duration
	CORSAllowedOrigins []string
	LoginMaxFailures   int
	LoginWindow        time.Duration
	Abuse              Abuse          // per-address limits, password-hashing cap (abuse.go)
	TrustedProxies     []netip.Prefix // TRUSTED_PROXIES: whose X-Forwarded-For counts
	// OrderProcessDelay is how long order:process simulates fulfilment
	// (0 in production; tests use it to crash a worker mid-task).
	OrderProcessDelay time.Duration

	// Side port for /metrics, /healthz and /debug/pprof/: worker and
	// scheduler always, api only when set.
	MetricsAddr string

	// Worker.
	Concurrency    int
	Queues         map[string]int
	StrictPriority bool
	// Wakeups (WORKER_WAKEUPS): an idle worker waits for producers' wake-ups
	// (queue.Wakeups) instead of polling; PollInterval is then the longest
	// it waits before looking at its queues anyway, which bounds the pickup
	// of a task that arrives without one. Without wake-ups PollInterval is
	// asynq's TaskCheckInterval (each pause drawn from [½, 1½) of it): the
	// pickup latency against Redis calls while idle.
	Wakeups         bool
	PollInterval    time.Duration
	ShutdownTimeout time.Duration
	RetryBase       time.Duration // 0: each task type's own base
	RetryMax        time.Duration // 0: each task type's own cap
	SMTPURL         string        // empty: the dev mailer logs every email
	SMTPFrom        string
	CleanupMaxAge   time.Duration
	Mail            MailRules // PUBLIC_URL, UNVERIFIED_MAIL_* (abuse.go)
	// Workflow reconciler (worker): how often it looks, how long a step must
	// have been enqueued before it asks asynq, and when a running workflow
	// counts as stuck (conveyor_workflows_stuck).
	WorkflowReconcileInterval time.Duration
	WorkflowReconcileAge      time.Duration
	WorkflowStuckAfter        time.Duration
	// DeadAfter (WORKER_DEAD_AFTER): a worker silent this long is dead and
	// its tasks run again elsewhere (queue.Liveness).
	DeadAfter time.Duration

	// Scheduler.
	SchedulesFile string
	SchedulerID   string        // names this replica in the leader lease; default host-pid
	LeaseTTL      time.Duration // leader lease TTL; a dead leader is replaced within it
	SyncInterval  time.Duration // how often the scheduler re-reads the schedules table
	CatchupWindow time.Duration // missed ticks younger than this are fired after a failover

	// Operations (dashboard, metrics, results).
	//
	// MonitorUsers may log in to the Asynqmon dashboard at /monitoring/;
	// with none the dashboard is off (404).
	MonitorUsers []MonitorUser
	// PrometheusURL is the Prometheus server Asynqmon's charts query; empty
	// hides the charts.
	PrometheusURL string
	// TaskRetention is how long a completed task and its result stay in
	// Redis when its type declares no Retention of its own (every shipped
	// type declares one). It is not a floor: see tasks/retention.go.
	TaskRetention time.Duration
}

// MonitorUser is one dashboard login from MONITOR_USERS.
type MonitorUser struct {
	Name     string
	Hash     string // bcrypt hash of the password
	ReadOnly bool   // may look, may not retry, delete, pause or cancel
}

// Defaults that appear in the README's configuration table.
const (
	DefaultHTTPAddr         = "127.0.0.1:8080"
	DefaultWorkerMetrics    = "127.0.0.1:9091"
	DefaultSchedulerMetrics = "127.0.0.1:9092"
	DefaultQueues           = "critical=6,default=3,low=1"
	DefaultBodyLimit        = 1 << 20
	DefaultTaskRetention    = 24 * time.Hour
	// DefaultDatabaseMaxConns keeps api + worker + scheduler replicas well
	// under PostgreSQL's default max_connections (100).
	DefaultDatabaseMaxConns = 20
	// DefaultGCPercent is the GOGC of the api and the worker unless GOGC is
	// set. Their live heaps are a few MB while every request or task
	// allocates, so at Go's default (100) they collected every few tens of
	// milliseconds under load, each cycle scanning every goroutine's stack:
	// ~15 % of the api's CPU per request, and a few µs of the worker's per
	// task (docs/BENCHMARKS.md, "API and worker CPU per task"). 400 lets
	// the heap grow to five times the live data (tens of MB) first.
	DefaultGCPercent = 400
	// DefaultPollInterval: with wake-ups, how long an idle worker waits for
	// one before it looks at its queues anyway (tasks enqueued by other
	// asynq clients are picked up within it). Polling alone would need 5 ms
	// for a p99 under 10 ms, at ~10 % of a core per idle worker
	// (docs/BENCHMARKS.md, pickup).
	DefaultPollInterval = time.Second
	// MaxWakePollInterval bounds WORKER_POLL_INTERVAL with wake-ups
	// (queue.MaxWakeWait).
	MaxWakePollInterval = 5 * time.Second
	minTokenLen         = 16
	minJWTSecretLen     = 32
)

// Load reads and validates the configuration for role. The error, if any,
// is a single line listing every bad variable by name.
func Load(getenv func(string) string, role Role) (Config, error) {
	p := parser{getenv: getenv}
	c := Config{Role: role}

	c.DatabaseURL = p.required("DATABASE_URL", validatePostgresURL)
	c.DatabaseMaxConns = p.intRange("DATABASE_MAX_CONNS", DefaultDatabaseMaxConns, 1, 1000)
	// The database commands (RoleMigrate) never use Redis.
	c.RedisURL, c.RedisClusterAddrs, c.RedisClusterPassword = p.redis(role != RoleMigrate)
	c.LogFormat = p.oneOf("LOG_FORMAT", "text", "text", "json")
	c.LogLevel = p.oneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error")
	c.DevMode = p.boolean("DEV_MODE", false)

	c.HTTPAddr = p.addr("HTTP_ADDR", DefaultHTTPAddr)
	c.AutoMigrate = p.boolean("AUTO_MIGRATE", false)
	c.BodyLimit = p.bytes("BODY_LIMIT", DefaultBodyLimit)
	if role == RoleAPI {
		c.APIToken = p.optional("API_TOKEN", func(v string) error {
			if len(v) < minTokenLen {
				return fmt.Errorf("must be at least %d characters", minTokenLen)
			}
			return nil
		})
		secret := p.optional("JWT_SECRET", func(v string) error {
			if len(v) < minJWTSecretLen {
				return fmt.Errorf("must be at least %d bytes (generate one with: openssl rand -hex 32)", minJWTSecretLen)
			}
			return nil
		})
		if secret == "" && !c.DevMode {
			p.fail("JWT_SECRET", errors.New("is required (at least 32 bytes) unless DEV_MODE=true"))
		}
		if secret != "" {
			c.JWTSecret = []byte(secret)
		}
		c.JWTTTL = p.duration("JWT_TTL", time.Hour, time.Minute)
		c.CORSAllowedOrigins = p.origins("CORS_ALLOWED_ORIGINS")
		c.LoginMaxFailures = p.intRange("LOGIN_MAX_FAILURES", 5, 1, 1000)
		c.LoginWindow = p.duration("LOGIN_WINDOW", 15*time.Minute, time.Second)
		c.Abuse, c.TrustedProxies = p.abuse(), p.trustedProxies("TRUSTED_PROXIES")
	}
	if (role == RoleAPI || role == RoleWorker) && p.str("GOGC", "") == "" {
		c.GCPercent = DefaultGCPercent
	}
	c.OrderProcessDelay = p.duration("ORDER_PROCESS_DELAY", 0, 0)

	switch role {
	case RoleAPI:
		// Optional for the api (it serves /metrics on HTTP_ADDR too): set,
		// it adds a side port with /healthz, /metrics and /debug/pprof/.
		if p.str("METRICS_ADDR", "") != "" {
			c.MetricsAddr = p.addr("METRICS_ADDR", "")
		}
	case RoleWorker:
		c.MetricsAddr = p.addr("METRICS_ADDR", DefaultWorkerMetrics)
		c.JWTSecret, c.Mail = p.workerSecret(), p.mailRules() // verification links (abuse.go)
	case RoleScheduler:
		c.MetricsAddr = p.addr("METRICS_ADDR", DefaultSchedulerMetrics)
	}

	c.Concurrency = p.intRange("WORKER_CONCURRENCY", 10, 1, 10000)
	c.Queues = p.queues("WORKER_QUEUES", DefaultQueues)
	c.StrictPriority = p.boolean("WORKER_STRICT_PRIORITY", false)
	c.Wakeups = p.boolean("WORKER_WAKEUPS", true)
	c.PollInterval = p.duration("WORKER_POLL_INTERVAL", DefaultPollInterval, time.Millisecond)
	switch {
	case c.PollInterval > time.Minute:
		p.fail("WORKER_POLL_INTERVAL", fmt.Errorf("%s must be at most 1m", c.PollInterval))
	case c.Wakeups && c.PollInterval > MaxWakePollInterval:
		p.fail("WORKER_POLL_INTERVAL", fmt.Errorf("%s must be at most %s with WORKER_WAKEUPS=true", c.PollInterval, MaxWakePollInterval))
	}
	c.ShutdownTimeout = p.duration("SHUTDOWN_TIMEOUT", 30*time.Second, time.Second)
	c.RetryBase = p.duration("RETRY_BASE", 0, 0)
	c.RetryMax = p.duration("RETRY_MAX", 0, 0)
	c.SMTPURL = p.optional("SMTP_URL", validateSMTPURL)
	c.SMTPFrom = p.str("SMTP_FROM", "Conveyor <noreply@conveyor.localhost>")
	c.CleanupMaxAge = p.duration("CLEANUP_MAX_AGE", 30*24*time.Hour, 24*time.Hour) // maintenance:cleanup's floor
	c.WorkflowReconcileInterval = p.duration("WORKFLOW_RECONCILE_INTERVAL", 30*time.Second, 100*time.Millisecond)
	c.WorkflowReconcileAge = p.duration("WORKFLOW_RECONCILE_AGE", time.Minute, time.Second)
	c.WorkflowStuckAfter = p.duration("WORKFLOW_STUCK_AFTER", 10*time.Minute, time.Second)
	c.DeadAfter = p.duration("WORKER_DEAD_AFTER", 10*time.Second, 3*time.Second)

	c.SchedulesFile = p.str("SCHEDULES_FILE", "")
	c.SchedulerID = p.str("SCHEDULER_ID", "")
	c.LeaseTTL = p.duration("SCHEDULER_LEASE_TTL", 15*time.Second, time.Second)
	c.SyncInterval = p.duration("SCHEDULE_SYNC_INTERVAL", 10*time.Second, 100*time.Millisecond)
	c.CatchupWindow = p.duration("SCHEDULER_CATCHUP_WINDOW", 5*time.Minute, 0)
	if c.CatchupWindow > 7*24*time.Hour {
		p.fail("SCHEDULER_CATCHUP_WINDOW", fmt.Errorf("%s must be at most 168h (7 days)", c.CatchupWindow))
	}
	if c.DeadAfter > 10*time.Minute {
		p.fail("WORKER_DEAD_AFTER", fmt.Errorf("%s must be at most 10m", c.DeadAfter))
	}
	if c.LeaseTTL > 10*time.Minute {
		p.fail("SCHEDULER_LEASE_TTL", fmt.Errorf("%s must be at most 10m", c.LeaseTTL))
	}

	c.MonitorUsers = p.monitorUsers("MONITOR_USERS")
	c.PrometheusURL = p.optional("PROMETHEUS_URL", validateHTTPURL)
	c.TaskRetention = p.duration("TASK_RETENTION", DefaultTaskRetention, 0)

	if len(p.errs) > 0 {
		return Config{}, fmt.Errorf("config: %s", strings.Join(p.errs, "; "))
	}
	return c, nil
}

// parser accumulates one message per bad variable.
type parser struct {
	getenv func(string) string
	errs   []string
}

func (p *parser) fail(name string, err error) {
	p.errs = append(p.errs, name+": "+err.Error())
}

func (p *parser) str(name, def string) string {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return def
}

func (p *parser) required(name string, check func(string) error) string {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		p.fail(name, errors.New("is required"))
		return ""
	}
	if err := check(v); err != nil {
		p.fail(name, err)
	}
	return v
}

func (p *parser) optional(name string, check func(string) error) string {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		return ""
	}
	if err := check(v); err != nil {
		p.fail(name, err)
	}
	return v
}

func (p *parser) oneOf(name, def string, allowed ...string) string {
	v := strings.ToLower(p.str(name, def))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.fail(name, fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", ")))
	return def
}

func (p *parser) boolean(name string, def bool) bool {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, fmt.Errorf("%q is not a boolean (use true or false)", v))
		return def
	}
	return b
}

func (p *parser) intRange(name string, def, lo, hi int) int {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(name, fmt.Errorf("%q must be an integer between %d and %d", v, lo, hi))
		return def
	}
	return n
}

func (p *parser) duration(name string, def, lo time.Duration) time.Duration {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		p.fail(name, fmt.Errorf("%q is not a duration (examples: 500ms, 30s, 24h)", v))
		return def
	}
	if d < lo {
		p.fail(name, fmt.Errorf("%s must be at least %s", d, lo))
		return def
	}
	return d
}

func (p *parser) addr(name, def string) string {
	v := p.str(name, def)
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		p.fail(name, fmt.Errorf("%q is not a host:port address", v))
		return def
	}
	return v
}

// bytes accepts a plain byte count or a K/M/G suffix (powers of 1024).
func (p *parser) bytes(name string, def int64) int64 {
	v := strings.ToUpper(p.str(name, ""))
	if v == "" {
		return def
	}
	mult := int64(1)
	for suffix, m := range map[string]int64{"K": 1 << 10, "M": 1 << 20, "G": 1 << 30} {
		if strings.HasSuffix(v, suffix) {
			mult, v = m, strings.TrimSuffix(v, suffix)
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		p.fail(name, fmt.Errorf("%q must be a positive size such as 1048576, 512K or 1M", p.getenv(name)))
		return def
	}
	return n * mult
}

// queues parses "critical=6,default=3,low=1" into weights.
func (p *parser) queues(name, def string) map[string]int {
	q, err := ParseQueues(p.str(name, def))
	if err != nil {
		p.fail(name, err)
		d, _ := ParseQueues(def)
		return d
	}
	return q
}

// ParseQueues parses a weighted queue list such as "critical=6,default=3,low=1".
// A queue without a weight gets weight 1.
func ParseQueues(s string) (map[string]int, error) {
	out := map[string]int{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, weight, hasWeight := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, fmt.Errorf("%q has an empty queue name", part)
		}
		w := 1
		if hasWeight {
			n, err := strconv.Atoi(strings.TrimSpace(weight))
			if err != nil || n < 1 {
				return nil, fmt.Errorf("weight %q of queue %q must be a positive integer", weight, name)
			}
			w = n
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("queue %q is listed twice", name)
		}
		out[name] = w
	}
	if len(out) == 0 {
		return nil, errors.New("lists no queue (example: critical=6,default=3,low=1)")
	}
	return out, nil
}

// QueueNames returns the configured queue names, sorted.
func (c Config) QueueNames() []string {
	names := make([]string, 0, len(c.Queues))
	for n := range c.Queues {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func validatePostgresURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("is not a URL (example: postgres://user:pass@127.0.0.1:5432/conveyor?sslmode=disable)")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("scheme %q is not postgres:// or postgresql://", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("has no host")
	}
	return nil
}

// redis reads REDIS_URL or REDIS_CLUSTER_ADDRS (exactly one, when required)
// and REDIS_CLUSTER_PASSWORD, which only a cluster uses: with REDIS_URL the
// password belongs in the URL.
func (p *parser) redis(required bool) (redisURL string, clusterAddrs []string, clusterPassword string) {
	redisURL = p.optional("REDIS_URL", ValidateRedisURL)
	clusterSet := strings.TrimSpace(p.getenv("REDIS_CLUSTER_ADDRS")) != ""
	if clusterSet {
		var err error
		if clusterAddrs, err = ParseClusterAddrs(p.getenv("REDIS_CLUSTER_ADDRS")); err != nil {
			p.fail("REDIS_CLUSTER_ADDRS", err)
		}
	}
	clusterPassword = p.getenv("REDIS_CLUSTER_PASSWORD")
	switch {
	case redisURL != "" && clusterSet:
		p.fail("REDIS_URL, REDIS_CLUSTER_ADDRS", errors.New("set only one of them (REDIS_URL for one server or Sentinel, REDIS_CLUSTER_ADDRS for a Redis Cluster)"))
	case redisURL == "" && !clusterSet && required:
		p.fail("REDIS_URL", errors.New("is required (or REDIS_CLUSTER_ADDRS for a Redis Cluster)"))
	}
	if clusterPassword != "" && !clusterSet {
		p.fail("REDIS_CLUSTER_PASSWORD", errors.New("is used only with REDIS_CLUSTER_ADDRS (with REDIS_URL, put the password in the URL)"))
	}
	return redisURL, clusterAddrs, clusterPassword
}

// ParseClusterAddrs parses REDIS_CLUSTER_ADDRS: comma-separated host:port
// seed nodes of a Redis Cluster, such as "10.0.0.1:6379,10.0.0.2:6379". The
// client learns the other nodes from any one of them.
func ParseClusterAddrs(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q is not a host:port address (example: 10.0.0.1:6379,10.0.0.2:6379)", a)
		}
		if seen[a] {
			return nil, fmt.Errorf("%q is listed twice", a)
		}
		seen[a] = true
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New("lists no address (example: 10.0.0.1:6379,10.0.0.2:6379)")
	}
	return out, nil
}

// ValidateRedisURL accepts the URL forms asynq understands:
// redis://[:pass@]host:port[/db], rediss://… (TLS) and
// redis-sentinel://[:pass@]host1:port,host2:port?master=name.
func ValidateRedisURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("is not a URL (example: redis://127.0.0.1:6379/0)")
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Host == "" {
			return errors.New("has no host")
		}
		if db := strings.TrimPrefix(u.Path, "/"); db != "" {
			if n, err := strconv.Atoi(db); err != nil || n < 0 {
				return fmt.Errorf("database %q must be a non-negative integer", db)
			}
		}
	case "redis-sentinel":
		if u.Host == "" {
			return errors.New("lists no sentinel address")
		}
		if u.Query().Get("master") == "" {
			return errors.New("needs ?master=<name> for redis-sentinel://")
		}
	default:
		return fmt.Errorf("scheme %q is not redis://, rediss:// or redis-sentinel://", u.Scheme)
	}
	return nil
}

// monitorUsers parses "name:bcrypt-hash[:ro],…". A bcrypt hash has no colon
// or comma, so both separators are unambiguous.
func (p *parser) monitorUsers(name string) []MonitorUser {
	v := p.str(name, "")
	if v == "" {
		return nil
	}
	var users []MonitorUser
	seen := map[string]bool{}
	for i, entry := range strings.Split(v, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		parts := strings.Split(entry, ":")
		u := MonitorUser{Name: parts[0]}
		if len(parts) >= 2 {
			u.Hash = parts[1]
		}
		switch {
		case len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro"):
			p.fail(name, fmt.Errorf("entry %d must be name:bcrypt-hash or name:bcrypt-hash:ro", i+1))
			continue
		case u.Name == "" || strings.ContainsAny(u.Name, " \t"):
			p.fail(name, fmt.Errorf("entry %d has an empty or blank-containing user name", i+1))
			continue
		case seen[u.Name]:
			p.fail(name, fmt.Errorf("user %q is listed twice", u.Name))
			continue
		}
		if _, err := bcrypt.Cost([]byte(u.Hash)); err != nil {
			p.fail(name, fmt.Errorf("user %q: the password is not a bcrypt hash such as $2a$10$… (make one with: api hashpassword, or htpasswd -nbBC 10 %s PASSWORD)", u.Name, u.Name))
			continue
		}
		u.ReadOnly = len(parts) == 3
		seen[u.Name] = true
		users = append(users, u)
	}
	return users
}

func validateHTTPURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be an http:// or https:// URL (example: http://prometheus:9090)")
	}
	return nil
}

// origins parses CORS_ALLOWED_ORIGINS: a comma-separated list of origins
// such as https://app.example.com, or "*" alone. Empty: no cross-origin access.
func (p *parser) origins(name string) []string {
	v := p.str(name, "")
	if v == "" {
		return nil
	}
	var out []string
	for _, o := range strings.Split(v, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o == "*" {
			out = append(out, o)
			continue
		}
		if strings.Contains(o, "*") { // Echo would match it as a pattern: refused, see README
			p.fail(name, fmt.Errorf("%q: wildcards inside an origin are not supported; list each origin, or use * alone", o))
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			p.fail(name, fmt.Errorf("%q is not an origin such as https://app.example.com", o))
			continue
		}
		out = append(out, u.Scheme+"://"+u.Host)
	}
	if len(out) > 1 && slices.Contains(out, "*") {
		p.fail(name, errors.New(`"*" must stand alone`))
	}
	return out
}

func validateSMTPURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("is not a URL (example: smtp://user:pass@127.0.0.1:587)")
	}
	if u.Scheme != "smtp" && u.Scheme != "smtps" {
		return fmt.Errorf("scheme %q is not smtp:// or smtps://", u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return errors.New("needs a host and a port")
	}
	return nil
}
