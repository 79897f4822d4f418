package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/lib/pq" // the "postgres" driver
)

// PGServer is a private PostgreSQL cluster, for tests that stop the
// database (an outage, `pg_ctl stop -m immediate`) and start it again.
// Never stop the shared PostgreSQL of services.sh for that: every other
// test uses it. As root the cluster runs as the postgres OS user, since
// PostgreSQL refuses root.
type PGServer struct {
	Port int // the same across restarts

	t   testing.TB
	bin string // directory of pg_ctl and initdb
	dir string // data dir and socket dir live here
}

// StartPGServer initialises a cluster in a temporary directory, starts it
// on a free loopback port with an empty database "conveyor" (the api
// migrates it), and stops it (immediately) and removes it at cleanup.
func StartPGServer(t testing.TB) *PGServer {
	t.Helper()
	bin, err := pgBinDir()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Not t.TempDir: the postgres user must be able to reach it.
	dir, err := os.MkdirTemp("/var/tmp", "conveyor-pgtest-")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	s := &PGServer{t: t, bin: bin, dir: dir}
	t.Cleanup(func() {
		_ = s.ctl("stop", "-m", "immediate")
		_ = os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testenv: running as root needs the postgres OS user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	_, port, _ := strings.Cut(FreeAddr(t), ":")
	s.Port, _ = strconv.Atoi(port)
	if out, err := s.asOwner(filepath.Join(bin, "initdb"), "-D", s.data(), "-U", "conveyor", "-E", "UTF8", "--locale=C",
		"--auth=trust", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	s.Start()
	admin, err := sql.Open("postgres", s.url("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(`CREATE DATABASE conveyor`); err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	return s
}

// URL is the database "conveyor" as DATABASE_URL.
func (s *PGServer) URL() string { return s.url("conveyor") }

func (s *PGServer) url(db string) string {
	return fmt.Sprintf("postgres://conveyor@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

func (s *PGServer) data() string { return filepath.Join(s.dir, "data") }

// Start starts the server and waits until it accepts connections.
func (s *PGServer) Start() {
	s.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100", s.Port, s.dir)
	if err := s.ctl("start", "-w", "-t", "60", "-l", filepath.Join(s.dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		s.t.Fatalf("testenv: pg_ctl start: %v\n%s", err, log)
	}
	Eventually(s.t, 30*time.Second, func() bool {
		c, err := sql.Open("postgres", s.url("postgres"))
		if err != nil {
			return false
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.PingContext(ctx) == nil
	}, "postgres on port %d does not accept connections", s.Port)
}

// Stop stops the server with mode ("immediate": like a crash, recovery
// from WAL at the next start; "fast": clean) and waits until it is gone.
func (s *PGServer) Stop(mode string) {
	s.t.Helper()
	if err := s.ctl("stop", "-w", "-m", mode); err != nil {
		s.t.Fatalf("testenv: pg_ctl stop -m %s: %v", mode, err)
	}
}

func (s *PGServer) ctl(args ...string) error {
	args = append([]string{"-D", s.data()}, args...)
	out, err := s.asOwner(filepath.Join(s.bin, "pg_ctl"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// asOwner runs a PostgreSQL program as the cluster's owner: postgres when
// we are root, else ourselves.
func (s *PGServer) asOwner(prog string, args ...string) *exec.Cmd {
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", prog}, args...)...)
	} else {
		cmd = exec.Command(prog, args...)
	}
	cmd.Dir = "/"
	return cmd
}

// pgBinDir finds initdb and pg_ctl: PG_BIN, the directory pg_ctl on PATH
// resolves to, or the newest /usr/lib/postgresql/*/bin (as services.sh).
func pgBinDir() (string, error) {
	ok := func(d string) bool {
		for _, p := range []string{"initdb", "pg_ctl"} {
			if _, err := os.Stat(filepath.Join(d, p)); err != nil {
				return false
			}
		}
		return true
	}
	if d := os.Getenv("PG_BIN"); d != "" && ok(d) {
		return d, nil
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil && ok(filepath.Dir(r)) {
			return filepath.Dir(r), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionLess(dirs[i], dirs[j]) })
	for i := len(dirs) - 1; i >= 0; i-- {
		if ok(dirs[i]) {
			return dirs[i], nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql or set PG_BIN")
}

func versionLess(a, b string) bool {
	va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
	vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
	return va < vb
}
