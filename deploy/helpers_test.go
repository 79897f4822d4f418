package deploy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"
)

// kustomizeModule is the kustomize CLI the tests run when KUSTOMIZE_BIN is not set; the Go
// module proxy serves it, so nothing is added to go.mod.
const kustomizeModule = "sigs.k8s.io/kustomize/kustomize/v5@v5.8.1"

// repoRoot is the module root (the tests run in deploy/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	return root
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeYAML(t *testing.T, path string, v any) {
	t.Helper()
	if err := yaml.Unmarshal(readFile(t, path), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// fakeSecrets are well-formed values for every secret, as an operator would write them.
func fakeSecrets(t *testing.T) map[string]string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("dashboard-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
		"REDIS_PASSWORD":    "fedcba9876543210fedcba9876543210",
		"DATABASE_URL":      "postgres://conveyor:0123456789abcdef@postgres:5432/conveyor?sslmode=require",
		"REDIS_URL":         "redis://:fedcba9876543210@redis:6379/0",
		"JWT_SECRET":        strings.Repeat("5e", 32),
		"API_TOKEN":         strings.Repeat("a1", 16),
		"MONITOR_USERS":     "admin:" + string(hash) + ",viewer:" + string(hash) + ":ro",
		"SMTP_URL":          "smtp://mailer:secret@mail.example.com:587",
	}
}

// getenv turns a map into the getenv function config.Load takes.
func getenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// composeVarRE matches ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message} and
// ${NAME?message} as docker compose interpolates them.
var composeVarRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate does what docker compose does to a value, with vars as the environment.
func interpolate(s string, vars map[string]string) (string, error) {
	var err error
	out := composeVarRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := composeVarRE.FindStringSubmatch(m)
		name, op, arg := sub[1], sub[2], sub[3]
		v, set := vars[name]
		switch op {
		case "":
			return v
		case "-":
			if !set {
				return arg
			}
		case ":-":
			if v == "" {
				return arg
			}
		case "?":
			if !set {
				err = fmt.Errorf("%s: %s", name, arg)
			}
		case ":?":
			if v == "" {
				err = fmt.Errorf("%s: %s", name, arg)
			}
		}
		return v
	})
	return out, err
}

// metricNameRE matches identifiers in a PromQL expression once strings, label matchers,
// ranges and grouping clauses are removed.
var (
	promStringRE   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promBracesRE   = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promGroupingRE = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdentRE    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeywords   = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true}
)

// promMetricNames returns the metric names an expression selects, sorted and unique.
// Functions and aggregations (identifiers followed by "(") and keywords are not metrics.
func promMetricNames(expr string) []string {
	e := promStringRE.ReplaceAllString(expr, `""`)
	e = promBracesRE.ReplaceAllString(e, " ")
	e = promGroupingRE.ReplaceAllString(e, " ")
	seen := map[string]bool{}
	for _, loc := range promIdentRE.FindAllStringIndex(e, -1) {
		name := e[loc[0]:loc[1]]
		if loc[0] > 0 && strings.ContainsAny(e[loc[0]-1:loc[0]], "0123456789.") {
			continue // exponent or duration suffix of a number: 1e3, 5m
		}
		if strings.HasPrefix(strings.TrimLeft(e[loc[1]:], " \t\n"), "(") || promKeywords[strings.ToLower(name)] {
			continue
		}
		seen[name] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// exportedMetric is a metric name the code registers, and the file that registers it.
type exportedMetric struct{ file, kind string }

var metricDeclRE = regexp.MustCompile(`(?s)(CounterOpts|GaugeOpts|HistogramOpts|SummaryOpts|NewDesc\()\s*\{?\s*(?:Name:\s*)?"([a-zA-Z_:][a-zA-Z0-9_:]*)"`)

// exportedMetrics reads the metric names that internal/observe registers, from its source.
func exportedMetrics(t *testing.T) map[string]exportedMetric {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "internal", "observe", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]exportedMetric{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		for _, m := range metricDeclRE.FindAllStringSubmatch(string(readFile(t, f)), -1) {
			out[m[2]] = exportedMetric{file: filepath.Base(f), kind: strings.TrimSuffix(m[1], "(")}
			if m[1] == "HistogramOpts" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					out[m[2]+s] = exportedMetric{file: filepath.Base(f), kind: m[1]}
				}
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d metric declarations in internal/observe: the pattern no longer matches the code", len(out))
	}
	return out
}

// runKustomize renders dir with KUSTOMIZE_BIN, or with `go run` of the pinned module.
func runKustomize(t *testing.T, dir string) []byte {
	t.Helper()
	var cmd *exec.Cmd
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if bin := os.Getenv("KUSTOMIZE_BIN"); bin != "" {
		cmd = exec.CommandContext(ctx, bin, "build", dir)
	} else {
		cmd = exec.CommandContext(ctx, goBin(), "run", kustomizeModule, "build", dir)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	return out
}

func goBin() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// optionalTool finds an external checker through its environment variable or PATH; the test
// is skipped without it (deploy/local/validate-deploy.sh installs them).
func optionalTool(t *testing.T, env, name string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found (set %s or run deploy/local/validate-deploy.sh)", name, env)
	}
	return p
}

// shellWords splits a plain shell command line: quotes and backslashes, no expansions.
// Anything else a shell would interpret is refused, so the line means the same to sh and
// to the test.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'' || c == '"':
			j := strings.IndexByte(line[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unterminated %c quote", c)
			}
			quoted := line[i+1 : i+1+j]
			if c == '"' && strings.ContainsAny(quoted, "$`\\") {
				return nil, fmt.Errorf("expansion inside double quotes: %q", quoted)
			}
			cur.WriteString(quoted)
			inWord = true
			i += j + 1
		case strings.IndexByte("$`\\;&|<>(){}*?[]#~", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q: keep the build line a plain command", c)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
