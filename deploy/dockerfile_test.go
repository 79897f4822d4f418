package deploy

import (
	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// dockerfile is deploy/Dockerfile as a list of instructions, continuation lines joined.
type dockerfile struct {
	args   map[string]string // ARG defaults before the first FROM
	stages [][]instruction   // instructions of each stage, FROM first
}

type instruction struct{ cmd, rest string }

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	df := dockerfile{args: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, "Dockerfile")))
	var logical string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			logical += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		logical += line
		cmd, rest, _ := strings.Cut(logical, " ")
		logical = ""
		in := instruction{cmd: strings.ToUpper(cmd), rest: strings.TrimSpace(rest)}
		switch {
		case in.cmd == "FROM":
			df.stages = append(df.stages, []instruction{in})
		case len(df.stages) == 0 && in.cmd == "ARG":
			name, def, _ := strings.Cut(in.rest, "=")
			df.args[name] = def
		case len(df.stages) == 0:
			t.Fatalf("Dockerfile: %s before the first FROM", in.cmd)
		default:
			df.stages[len(df.stages)-1] = append(df.stages[len(df.stages)-1], in)
		}
	}
	if len(df.stages) < 2 {
		t.Fatalf("Dockerfile: %d stages, want a multi-stage build", len(df.stages))
	}
	return df
}

// buildLine returns the words of the RUN instruction that runs go build.
func (df dockerfile) buildLine(t *testing.T) []string {
	t.Helper()
	var found []string
	for _, in := range df.stages[0] {
		if in.cmd == "RUN" && strings.Contains(in.rest, "go build") {
			if found != nil {
				t.Fatal("Dockerfile: more than one RUN with go build")
			}
			words, err := shellWords(in.rest)
			if err != nil {
				t.Fatalf("Dockerfile build line %q: %v", in.rest, err)
			}
			found = words
		}
	}
	if found == nil {
		t.Fatal("Dockerfile: no RUN ... go build in the first stage")
	}
	return found
}

var goDirectiveRE = regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`)

func TestDockerfile(t *testing.T) {
	t.Parallel()
	df := parseDockerfile(t)

	t.Run("builder Go is the module's", func(t *testing.T) {
		from := strings.Fields(df.stages[0][0].rest)[0]
		from = strings.ReplaceAll(from, "${GO_VERSION}", df.args["GO_VERSION"])
		m := regexp.MustCompile(`^golang:(\d+)\.(\d+)`).FindStringSubmatch(from)
		if m == nil {
			t.Fatalf("build stage FROM %s: want golang:<major>.<minor>", from)
		}
		mod := goDirectiveRE.FindStringSubmatch(string(readFile(t, filepath.Join(repoRoot(t), "go.mod"))))
		if mod == nil {
			t.Fatal("go.mod has no go directive")
		}
		img, _ := strconv.Atoi(m[1])
		imgMinor, _ := strconv.Atoi(m[2])
		want, _ := strconv.Atoi(mod[1])
		wantMinor, _ := strconv.Atoi(mod[2])
		if img != want || imgMinor < wantMinor {
			t.Errorf("build image %s is older than go.mod's go %s.%s", from, mod[1], mod[2])
		}
	})

	t.Run("final stage is distroless or scratch, non-root", func(t *testing.T) {
		final := df.stages[len(df.stages)-1]
		base := strings.Fields(final[0].rest)[0]
		if base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/static") {
			t.Errorf("final stage FROM %s: want scratch or gcr.io/distroless/static*", base)
		}
		user := ""
		for _, in := range final {
			if in.cmd == "USER" {
				user = in.rest
			}
			if in.cmd == "RUN" {
				t.Errorf("final stage runs %q: it has no shell", in.rest)
			}
		}
		uid, _, _ := strings.Cut(user, ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			t.Errorf("final stage USER %q: want a numeric non-root UID (Kubernetes' runAsNonRoot checks it)", user)
		}
	})

	t.Run("build line builds every binary statically", func(t *testing.T) {
		words := df.buildLine(t)
		line := strings.Join(words, " ")
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/api", "./cmd/worker", "./cmd/scheduler", "./deploy/healthcheck"} {
			if !strings.Contains(line, want) {
				t.Errorf("build line %q lacks %s", line, want)
			}
		}
	})

	t.Run("schedules file is in the image where SCHEDULES_FILE points", func(t *testing.T) {
		final := df.stages[len(df.stages)-1]
		var env, copies string
		for _, in := range final {
			switch in.cmd {
			case "ENV":
				env += in.rest + " "
			case "COPY":
				copies += in.rest + "\n"
			}
		}
		m := regexp.MustCompile(`SCHEDULES_FILE=(\S+)`).FindStringSubmatch(env)
		if m == nil {
			t.Fatal("final stage sets no SCHEDULES_FILE")
		}
		if !strings.Contains(copies, "deploy/schedules.yaml "+m[1]) {
			t.Errorf("no COPY deploy/schedules.yaml %s in the final stage", m[1])
		}
		if !strings.Contains(env, "LOG_FORMAT=json") {
			t.Error("final stage does not default LOG_FORMAT=json")
		}
	})

	t.Run("dockerignore keeps secrets out and the module in", func(t *testing.T) {
		lines := map[string]bool{}
		for _, l := range strings.Split(string(readFile(t, filepath.Join(repoRoot(t), ".dockerignore"))), "\n") {
			lines[strings.TrimSpace(l)] = true
		}
		for _, want := range []string{".git", "deploy/.env", ".local"} {
			if !lines[want] {
				t.Errorf(".dockerignore lacks %s", want)
			}
		}
		for _, keep := range []string{"go.mod", "go.sum", "cmd", "internal", "tasks", "deploy", "deploy/schedules.yaml", "deploy/healthcheck"} {
			if lines[keep] || lines["/"+keep] || lines[keep+"/"] {
				t.Errorf(".dockerignore excludes %s, which the build needs", keep)
			}
		}
	})
}

// TestDockerfileBuild runs the Dockerfile's go build line as written (with -o pointed at a
// temporary directory) and checks that the binaries are static, trimmed and start.
func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four binaries")
	}
	t.Parallel()
	words := parseDockerfile(t).buildLine(t)
	out := t.TempDir()
	var env []string
	for len(words) > 0 && strings.Contains(words[0], "=") {
		env = append(env, words[0])
		words = words[1:]
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" {
		t.Fatalf("build line %q: want [VAR=value...] go build ...", words)
	}
	args := append([]string(nil), words[1:]...)
	for i := range args {
		if args[i] == "-o" && i+1 < len(args) {
			args[i+1] = out + string(os.PathSeparator)
		}
	}
	cmd := exec.Command(goBin(), args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", strings.Join(env, " "), strings.Join(cmd.Args, " "), err, b)
	}

	for _, name := range []string{"api", "worker", "scheduler", "healthcheck"} {
		path := filepath.Join(out, name)
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has a dynamic loader (PT_INTERP): not static", name)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s links shared libraries %v: not static", name, libs)
		}
		f.Close()
		if bytes.Contains(readFile(t, path), []byte(repoRoot(t))) {
			t.Errorf("%s contains the build directory %s: -trimpath is not in effect", name, repoRoot(t))
		}
	}

	// The binaries run with no configuration where they can: api help, healthcheck usage.
	if b, err := exec.Command(filepath.Join(out, "api"), "help").CombinedOutput(); err != nil || !strings.Contains(string(b), "migrate") {
		t.Errorf("api help: %v\n%s", err, b)
	}
	if b, err := exec.Command(filepath.Join(out, "healthcheck")).CombinedOutput(); err == nil || !strings.Contains(string(b), "usage") {
		t.Errorf("healthcheck without a URL: %v\n%s", err, b)
	}
}
