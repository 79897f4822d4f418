package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// TestOrdersCreatedWhileRedisDownComplete: with Redis down (a private
// redis-server, killed with SIGKILL) the api still accepts orders — they
// and their outbox rows are in PostgreSQL — and the relay keeps retrying;
// once Redis is back every order completes with exactly one confirmation
// email.
func TestOrdersCreatedWhileRedisDownComplete(t *testing.T) {
	t.Parallel()
	rs := testenv.StartRedisServer(t)
	e := startProduct(t, testenv.PlatformOptions{RedisURL: rs.URL()})
	const email = "barbara@example.com"
	_, token := e.signUp(t, email, "Barbara") // the pipeline works before the outage

	rs.Kill()
	down := time.Now()
	const n = 5
	var orders []orderView
	for range n {
		orders = append(orders, e.createOrder(t, token))
	}

	// The relay tried, failed, and keeps the rows for later.
	db := openDB(t, e.DBURL)
	var outbox struct {
		Unsent   int `db:"unsent"`
		Attempts int `db:"attempts"`
	}
	testenv.Eventually(t, 30*time.Second, func() bool {
		err := db.GetContext(context.Background(), &outbox,
			`SELECT count(*) AS unsent, coalesce(sum(attempts), 0) AS attempts FROM outbox WHERE sent_at IS NULL`)
		if err != nil {
			t.Fatal(err)
		}
		// A real outage, not a blip: several relay attempts and heartbeat
		// misses on the worker's side.
		// One row per order: order:process (its confirmation waits for it).
		return outbox.Unsent == n && outbox.Attempts >= 5 && time.Since(down) >= 5*time.Second
	}, "outbox during the outage: %+v, want %d unsent rows and at least 5 failed attempts", &outbox, n)
	for _, o := range orders {
		if s := e.order(t, token, o.ID).Status; s != "pending" {
			t.Fatalf("order %d is %s while Redis is down, want pending", o.ID, s)
		}
	}
	// The api stays alive but says it is not ready, naming Redis.
	if status, _, raw := call(t, http.MethodGet, e.APIURL+"/readyz", "", nil, nil); status != http.StatusServiceUnavailable || !strings.Contains(string(raw), `"redis":{"status":"unavailable"`) {
		t.Errorf("api /readyz during the outage: %d %s", status, raw)
	}
	_, sentDuringOutage := e.confirmations(email, orders)

	rs.Start()
	outage := time.Since(down)
	up := time.Now()
	testenv.WaitHTTP(t, e.APIURL+"/readyz", 30*time.Second, e.API)
	e.waitCompleted(t, token, orders, 120*time.Second)
	recovered := time.Since(up)
	emails := e.requireOneConfirmationEach(t, email, orders)
	if err := db.GetContext(context.Background(), &outbox.Unsent, `SELECT count(*) FROM outbox WHERE sent_at IS NULL`); err != nil {
		t.Fatal(err)
	}
	if outbox.Unsent != 0 {
		t.Errorf("%d outbox rows still unsent after recovery", outbox.Unsent)
	}
	t.Logf("redis down %s: %d orders created (201), %d outbox rows held with %d failed relay attempts, %d emails sent meanwhile; after restart %d completed within %s, %d confirmation emails",
		outage.Round(100*time.Millisecond), n, n, outbox.Attempts, sentDuringOutage, n, recovered.Round(100*time.Millisecond), emails)
}
