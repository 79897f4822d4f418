// Package testenv gives tests real, isolated PostgreSQL and Redis.
//
// The servers are the project's own (deploy/local/services.sh, started by
// `make test`); their URLs come from TEST_DATABASE_URL and TEST_REDIS_URL,
// defaulting to the ports services.sh uses. Isolation:
//
//   - DB: every call creates a fresh database cloned from a template that
//     holds the current migrations (one template per migration set, built
//     once under an advisory lock, so parallel test binaries share it);
//   - Redis: every call gets its own logical database (services.sh
//     configures 1024 of them), flushed before and after use.
//
// Tests fail, not skip, when the servers are unreachable: a test suite that
// silently skips proves nothing.
package testenv

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/db"
)

const (
	defaultDatabaseURL = "postgres://conveyor:conveyor@127.0.0.1:55432/conveyor?sslmode=disable"
	defaultRedisURL    = "redis://127.0.0.1:56379/0"
	redisDatabases     = 1024 // `databases` in services.sh's redis.conf
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// AdminDatabaseURL is the URL of the database tests create their databases from.
func AdminDatabaseURL() string { return env("TEST_DATABASE_URL", defaultDatabaseURL) }

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// DB returns a connection to a fresh, migrated database of its own and the
// database's URL (to hand to binaries under test). It is dropped at cleanup.
func DB(t testing.TB) (*sqlx.DB, string) {
	t.Helper()
	ctx := context.Background()
	templateOnce.Do(func() { templateName, templateErr = ensureTemplate(ctx) })
	if templateErr != nil {
		t.Fatalf("testenv: %v (is PostgreSQL running? `make test` or deploy/local/services.sh start)", templateErr)
	}
	admin, err := sqlx.Open("postgres", AdminDatabaseURL())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer admin.Close()
	name := "t_" + randomHex(8)
	// CREATE DATABASE … TEMPLATE fails while another session is copying the
	// same template; retry briefly.
	for attempt := 0; ; attempt++ {
		_, err = admin.ExecContext(ctx, fmt.Sprintf(`CREATE DATABASE %s TEMPLATE %s`, name, templateName))
		if err == nil || attempt == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("testenv: create database: %v", err)
	}
	dbURL := withDatabase(AdminDatabaseURL(), name)
	conn, err := db.Open(ctx, dbURL)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		a, err := sqlx.Open("postgres", AdminDatabaseURL())
		if err != nil {
			return
		}
		defer a.Close()
		_, _ = a.Exec(fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, name))
	})
	return conn, dbURL
}

// Tx returns a transaction on a fresh database that is rolled back at
// cleanup, for store tests that need no commits.
func Tx(t testing.TB) *sqlx.Tx {
	t.Helper()
	d, _ := DB(t)
	tx, err := d.Beginx()
	if err != nil {
		t.Fatalf("testenv: begin: %v", err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	return tx
}

// ensureTemplate builds (once per migration set) a template database with
// every migration applied, and returns its name.
func ensureTemplate(ctx context.Context) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(db.Migrations(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(db.Migrations(), path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%s\x00", path, b)
		return nil
	})
	if err != nil {
		return "", err
	}
	name := "conveyor_tpl_" + hex.EncodeToString(h.Sum(nil))[:12]

	admin, err := db.Open(ctx, AdminDatabaseURL())
	if err != nil {
		return "", err
	}
	defer admin.Close()
	conn, err := admin.Connx(ctx) // the advisory lock belongs to one session
	if err != nil {
		return "", err
	}
	defer conn.Close()
	const lockID = 7_400_112_233
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, lockID); err != nil {
		return "", err
	}
	defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, lockID)

	var exists bool
	if err := conn.GetContext(ctx, &exists, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	tmp := name + "_building"
	_, _ = conn.ExecContext(ctx, fmt.Sprintf(`DROP DATABASE IF EXISTS %s WITH (FORCE)`, tmp))
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`CREATE DATABASE %s`, tmp)); err != nil {
		return "", err
	}
	mdb, err := db.Open(ctx, withDatabase(AdminDatabaseURL(), tmp))
	if err != nil {
		return "", err
	}
	_, err = db.Migrate(ctx, mdb.DB)
	mdb.Close()
	if err != nil {
		return "", err
	}
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`ALTER DATABASE %s RENAME TO %s`, tmp, name)); err != nil {
		return "", err
	}
	return name, nil
}

func withDatabase(rawURL, name string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		panic(err)
	}
	u.Path = "/" + name
	return u.String()
}

// Redis returns the URL of a Redis logical database of the caller's own,
// flushed now and at cleanup, and a client connected to it.
func Redis(t testing.TB) (string, *redis.Client) {
	t.Helper()
	base := env("TEST_REDIS_URL", defaultRedisURL)
	opt, err := redis.ParseURL(base)
	if err != nil {
		t.Fatalf("testenv: TEST_REDIS_URL: %v", err)
	}
	ctx := context.Background()
	ctl := redis.NewClient(opt)
	defer ctl.Close()
	n, err := ctl.Incr(ctx, "conveyor:testenv:next_db").Result()
	if err != nil {
		t.Fatalf("testenv: redis: %v (is Redis running? `make test` or deploy/local/services.sh start)", err)
	}
	dbNum := 1 + int(n%(redisDatabases-1))
	o := *opt
	o.DB = dbNum
	c := redis.NewClient(&o)
	if err := c.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("testenv: redis db %d: %v (services.sh configures %d databases)", dbNum, err, redisDatabases)
	}
	t.Cleanup(func() {
		_ = c.FlushDB(context.Background()).Err()
		c.Close()
	})
	u, _ := url.Parse(base)
	u.Path = fmt.Sprintf("/%d", dbNum)
	return u.String(), c
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago, for binaries under test.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Logger returns a logger writing to the test log (or discarding, if
// testing.Verbose is off, to keep failures readable).
func Logger(t testing.TB) *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = testWriter{t}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
