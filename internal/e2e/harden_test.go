package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conveyor-run/conveyor/internal/mail/mailtest"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

// Abuse limits and input rules through the real binaries: two api replicas
// behind a "proxy" (the test, trusted through TRUSTED_PROXIES, names each
// client in X-Forwarded-For). A login flood from one client is cut off after
// LOGIN_ADDR_MAX attempts across both replicas while another client logs in;
// registrations and dashboard guesses are limited per address; a client
// cannot escape by writing its own X-Forwarded-For; bad input is a 4xx.
func TestAbuseLimitsAcrossReplicas(t *testing.T) {
	t.Parallel()
	e := startProduct(t, testenv.PlatformOptions{NoWorker: true, Env: []string{
		"JWT_SECRET=e2e-shared-secret-0123456789abcdef0123",
		"TRUSTED_PROXIES=127.0.0.1/32,::1",
		"LOGIN_ADDR_MAX=6",
		"REGISTER_ADDR_MAX=3",
		"MONITOR_MAX_FAILURES=2",
		monitorUsers(t, [3]string{"alice", "alice-password", ""}),
	}})
	addr2 := testenv.FreeAddr(t)
	api2 := testenv.Start(t, "api-2", e.Bins.API, append(append([]string{}, e.Env...), "HTTP_ADDR="+addr2))
	url2 := "http://" + addr2
	testenv.WaitHTTP(t, url2+"/healthz", 30*time.Second, api2)
	urls := []string{e.APIURL, url2}
	const (
		attacker = "203.0.113.7"
		grace    = "198.51.100.9"
		password = "correct horse battery"
	)
	xff := func(client string) []string { return []string{"X-Forwarded-For", client} }

	if status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/auth/register", "",
		map[string]string{"email": "grace@example.com", "password": password, "name": "Grace"}, nil, xff(grace)...); status != http.StatusCreated {
		t.Fatalf("register grace: %d %s", status, raw)
	}

	// The flood: new emails each time, alternating replicas, 4 at once.
	var reached, limited atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				status, hdr, raw := call(t, http.MethodPost, urls[(w+i)%2]+"/api/v1/auth/login", "",
					map[string]string{"email": fmt.Sprintf("guess-%d-%d@example.com", w, i), "password": "guess-guess"}, nil, xff(attacker)...)
				switch {
				case status == http.StatusUnauthorized:
					reached.Add(1)
				case status == http.StatusTooManyRequests && hdr.Get("Retry-After") != "":
					limited.Add(1)
				default:
					t.Errorf("flood: %d %v %s", status, hdr, raw)
					return
				}
			}
		})
	}
	testenv.Eventually(t, 60*time.Second, func() bool { return limited.Load() >= 20 || t.Failed() }, "the flood was never limited")
	for i, u := range urls { // Grace logs in on both replicas while the flood goes on
		if status, _, raw := call(t, http.MethodPost, u+"/api/v1/auth/login", "",
			map[string]string{"email": "grace@example.com", "password": password}, nil, xff(grace)...); status != http.StatusOK {
			t.Fatalf("grace's login on replica %d during the flood: %d %s", i+1, status, raw)
		}
	}
	close(stop)
	wg.Wait()
	if got := reached.Load(); got != 6 {
		t.Fatalf("%d flood attempts reached the password check across two replicas, want LOGIN_ADDR_MAX = 6", got)
	}
	// Writing a forged address first in X-Forwarded-For does not help: the
	// nearest untrusted address (the one the proxy saw) counts.
	if status, _, raw := call(t, http.MethodPost, url2+"/api/v1/auth/login", "",
		map[string]string{"email": "grace@example.com", "password": password}, nil, xff(grace+", "+attacker)...); status != http.StatusTooManyRequests {
		t.Fatalf("attacker forging grace's address: %d %s, want 429", status, raw)
	}

	// Registrations: REGISTER_ADDR_MAX per address, across replicas.
	for i := range 4 {
		status, hdr, raw := call(t, http.MethodPost, urls[i%2]+"/api/v1/auth/register", "",
			map[string]string{"email": fmt.Sprintf("bulk-%d@example.com", i), "password": password, "name": "Bulk"}, nil, xff("192.0.2.50")...)
		want := http.StatusCreated
		if i == 3 {
			want = http.StatusTooManyRequests
		}
		if status != want || (want == http.StatusTooManyRequests && hdr.Get("Retry-After") == "") {
			t.Fatalf("registration %d: %d %s, want %d", i+1, status, raw, want)
		}
	}

	// Dashboard guesses: MONITOR_MAX_FAILURES per name + address.
	dash := func(u, client, pw string) int {
		status, _, _ := call(t, http.MethodGet, u+"/monitoring/api/queues", "", nil, nil,
			"Authorization", basicAuth("alice", pw), "X-Forwarded-For", client)
		return status
	}
	for i := range 2 {
		if status := dash(urls[i], attacker, "wrong"); status != http.StatusUnauthorized {
			t.Fatalf("dashboard guess %d: %d", i+1, status)
		}
	}
	if status := dash(e.APIURL, attacker, "alice-password"); status != http.StatusTooManyRequests {
		t.Fatalf("dashboard after 2 failures from one address: %d, want 429", status)
	}
	if status := dash(url2, grace, "alice-password"); status != http.StatusOK {
		t.Fatalf("alice from another address: %d", status)
	}
	if status, _, raw := call(t, http.MethodGet, url2+"/monitoring/api/queues/nope", "", nil, nil,
		"Authorization", basicAuth("alice", "alice-password"), "X-Forwarded-For", grace); status != http.StatusNotFound || !strings.Contains(string(raw), `"not_found"`) {
		t.Fatalf("dashboard error: %d %s, want a JSON 404", status, raw)
	}

	t.Logf("login flood from one client across 2 replicas: %d attempts reached the password check (LOGIN_ADDR_MAX=6), %d got 429; the other client logged in on both replicas during the flood",
		reached.Load(), limited.Load())

	// Bad input: 4xx naming the field, never a 5xx.
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/api/v1/auth/register", `{"email":"n@example.com","password":"long-enough","name":"a\u0000b"}`, 422, `"name"`},
		{"POST", "/api/v1/tasks", `{"type":"maintenance:cleanup","payload":{"max_age_hours":2562048}}`, 422, `"payload.max_age_hours"`},
		{"POST", "/api/v1/tasks", `{"type":"system:ping","task_id":"schedule:cleanup-daily:1767225600"}`, 422, `"task_id"`},
		{"POST", "/api/v1/schedules", `{"name":"zero","spec":"@every 0s","task_type":"system:ping"}`, 422, `"spec"`},
		{"GET", "/api/v1/posts?author_id=2147483648", "", 200, `"data":[]`},
		{"GET", "/api/v1/schedules/a%00b", "", 404, `"not_found"`},
	} {
		var body any
		if tc.body != "" {
			body = tc.body
		}
		status, raw := e.Do(tc.method, tc.path, body, nil)
		if status != tc.status || !strings.Contains(string(raw), tc.want) {
			t.Errorf("%s %s: %d %s, want %d with %s", tc.method, tc.path, status, raw, tc.status, tc.want)
		}
	}
}

// Mail rules through the real binaries: an account registered with an
// address nobody proved gets a welcome email without its (attacker-chosen)
// name and, for five orders, order notices without items, three emails in
// all (UNVERIFIED_MAIL_MAX); after following the welcome email's link, every
// order gets its full confirmation.
func TestMailToUnprovenAddressesIsLimited(t *testing.T) {
	t.Parallel()
	e := startProduct(t, testenv.PlatformOptions{Env: []string{"UNVERIFIED_MAIL_MAX=3"}})
	const email, password, name = "victim@example.com", "correct horse battery", "Visit evil.example"
	if status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/auth/register", "",
		map[string]string{"email": email, "password": password, "name": name}, nil); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, raw)
	}
	// The welcome email first, so the three allowed emails are the welcome and
	// two notices whatever order the worker would run the tasks in.
	if !e.mail.Wait(30*time.Second, func([]mailtest.Message) bool { return len(withSubject(e.mail.To(email), welcomeSubject)) > 0 }) {
		t.Fatalf("no welcome email for %s within 30s; received: %v", email, subjects(e.mail.Messages()))
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if status, _, raw := call(t, http.MethodPost, e.APIURL+"/api/v1/auth/login", "",
		map[string]string{"email": email, "password": password}, &tok); status != http.StatusOK {
		t.Fatalf("login: %d %s", status, raw)
	}
	var orders []orderView
	for range 5 {
		orders = append(orders, e.createOrder(t, tok.AccessToken))
	}
	e.waitCompleted(t, tok.AccessToken, orders, 90*time.Second) // the email tasks too
	got := e.mail.To(email)
	if len(got) != 3 || len(withSubject(got, welcomeSubject)) != 1 {
		t.Fatalf("%d emails to the unproven address, want the welcome and 2 notices: %v", len(got), subjects(got))
	}
	for _, m := range got {
		if strings.Contains(m.Subject+m.Text+m.HTML, "evil") || strings.Contains(m.Text, "book") || strings.Contains(m.Subject, "confirmed") {
			t.Fatalf("an email to an unproven address carries user-chosen text: %s\n%s", m.Subject, m.Text)
		}
	}

	e.verify(t, withSubject(got, welcomeSubject)[0])
	verified := []orderView{e.createOrder(t, tok.AccessToken), e.createOrder(t, tok.AccessToken)}
	e.waitCompleted(t, tok.AccessToken, verified, 60*time.Second)
	for _, o := range verified {
		conf := withSubject(e.mail.To(email), fmt.Sprintf("Order #%d confirmed", o.ID))
		if len(conf) != 1 || !strings.Contains(conf[0].Text, "book") {
			t.Fatalf("order %d after verification: %v", o.ID, subjects(e.mail.To(email)))
		}
	}
	t.Logf("unproven address: 5 orders → %d emails (welcome + notices, limit 3); after verification 2 orders → 2 confirmations", len(got))
}
