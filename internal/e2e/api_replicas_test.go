package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// Two api replicas on one database and one Redis, as in production: tokens
// from one work on the other, orders placed on both concurrently are each
// relayed once (the relays share the outbox with SKIP LOCKED) and confirmed
// by exactly one email, and the login limit holds across them.
func TestTwoAPIReplicas(t *testing.T) {
	t.Parallel()
	e := startProduct(t, testenv.PlatformOptions{Env: []string{
		"JWT_SECRET=e2e-shared-secret-0123456789abcdef0123",
		"LOGIN_MAX_FAILURES=3",
	}})
	addr2 := testenv.FreeAddr(t)
	api2 := testenv.Start(t, "api-2", e.Bins.API, append(append([]string{}, e.Env...), "HTTP_ADDR="+addr2))
	url2 := "http://" + addr2
	testenv.WaitHTTP(t, url2+"/healthz", 30*time.Second, api2)
	urls := []string{e.APIURL, url2}

	const email = "hedy@example.com"
	_, token := e.signUp(t, email, "Hedy") // registered and logged in on replica 1
	var me struct {
		Email string `json:"email"`
	}
	if status, _, raw := call(t, http.MethodGet, url2+"/api/v1/users/me", token, nil, &me); status != http.StatusOK || me.Email != email {
		t.Fatalf("replica 2 with replica 1's token: %d %s", status, raw)
	}

	const n = 20
	orders := make([]orderView, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var o orderView
			status, _, raw := call(t, http.MethodPost, urls[i%2]+"/api/v1/orders", token, orderBody(), &o)
			if status != http.StatusCreated {
				t.Errorf("order %d on replica %d: %d %s", i, i%2+1, status, raw)
			}
			orders[i] = o
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	e.waitCompleted(t, token, orders, 90*time.Second)
	total := e.requireOneConfirmationEach(t, email, orders)

	db := openDB(t, e.DBURL)
	var outbox struct {
		Rows     int `db:"rows"`
		Unsent   int `db:"unsent"`
		Attempts int `db:"attempts"`
	}
	if err := db.GetContext(context.Background(), &outbox,
		`SELECT count(*) AS rows, count(*) FILTER (WHERE sent_at IS NULL) AS unsent, coalesce(sum(attempts), 0) AS attempts FROM outbox`); err != nil {
		t.Fatal(err)
	}
	// 1 welcome email + 2 tasks per order, each sent once, none failed.
	if outbox.Rows != 1+2*n || outbox.Unsent != 0 || outbox.Attempts != 0 {
		t.Fatalf("outbox = %+v, want %d rows all sent at the first attempt", outbox, 1+2*n)
	}

	// Failed logins on either replica count together.
	for i := range 3 {
		status, _, raw := call(t, http.MethodPost, urls[i%2]+"/api/v1/auth/login", "",
			map[string]string{"email": email, "password": fmt.Sprint("wrong-", i)}, nil)
		if status != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d %s", i+1, status, raw)
		}
	}
	for _, u := range urls {
		if status, _, raw := call(t, http.MethodPost, u+"/api/v1/auth/login", "",
			map[string]string{"email": email, "password": "correct horse battery"}, nil); status != http.StatusTooManyRequests {
			t.Fatalf("after 3 failures across replicas, %s: %d %s, want 429", u, status, raw)
		}
	}
	t.Logf("two api replicas: %d orders (alternating, concurrent) completed, %d confirmation emails, %d outbox rows sent once; login limit shared", n, total, outbox.Rows)
}
