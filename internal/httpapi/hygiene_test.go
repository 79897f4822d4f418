package httpapi_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/httpapi"
)

// TestCORS: origins from CORS_ALLOWED_ORIGINS are echoed back, others get
// no CORS headers, and credentials are never allowed (tokens travel in the
// Authorization header, not in cookies).
func TestCORS(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"DATABASE_URL": "postgres://u:p@127.0.0.1:1/db", "REDIS_URL": "redis://127.0.0.1:1/0",
		"JWT_SECRET":           testSecret,
		"CORS_ALLOWED_ORIGINS": "https://app.example.com, http://localhost:3000/",
	}
	cfg, err := config.Load(func(k string) string { return env[k] }, config.RoleAPI)
	if err != nil {
		t.Fatal(err)
	}
	b := setupFullWith(t, httpapi.Options{CORSAllowedOrigins: cfg.CORSAllowedOrigins})
	f := newFixtures(t, b)
	preflight := []string{"Access-Control-Request-Method", "PATCH", "Access-Control-Request-Headers", "authorization,content-type,idempotency-key"}
	cases := []struct {
		name    string
		method  string
		path    string
		authz   string
		origin  string
		header  []string
		allowed bool
	}{
		{"listed origin", "GET", "/api/v1/posts", "", "https://app.example.com", nil, true},
		{"second listed origin, normalised", "GET", "/api/v1/posts", "", "http://localhost:3000", nil, true},
		{"listed origin, error response", "GET", "/api/v1/users/me", "", "https://app.example.com", nil, true},
		{"listed origin, signed in", "GET", "/api/v1/users/me", f.authz[owner], "https://app.example.com", nil, true},
		{"preflight from listed origin", "OPTIONS", "/api/v1/posts/1", "", "https://app.example.com", preflight, true},
		{"other origin", "GET", "/api/v1/posts", "", "https://evil.example.com", nil, false},
		{"listed origin as a prefix", "GET", "/api/v1/posts", "", "https://app.example.com.evil.example", nil, false},
		{"other scheme", "GET", "/api/v1/posts", "", "http://app.example.com", nil, false},
		{"other port", "GET", "/api/v1/posts", "", "https://app.example.com:8443", nil, false},
		{"null origin", "GET", "/api/v1/posts", "", "null", nil, false},
		{"preflight from other origin", "OPTIONS", "/api/v1/posts/1", "", "https://evil.example.com", preflight, false},
	}
	for _, tc := range cases {
		rec := b.call(t, tc.method, tc.path, tc.authz, nil, nil, append([]string{"Origin", tc.origin}, tc.header...)...)
		h := rec.Header()
		if got := h.Get("Access-Control-Allow-Origin"); (got == tc.origin) != tc.allowed || (!tc.allowed && got != "") {
			t.Errorf("%s: Access-Control-Allow-Origin = %q for %q", tc.name, got, tc.origin)
		}
		if h.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("%s: credentials allowed", tc.name)
		}
		if !slices.Contains(h.Values("Vary"), "Origin") && !strings.Contains(strings.Join(h.Values("Vary"), ","), "Origin") {
			t.Errorf("%s: no Vary: Origin (%q); caches would mix origins", tc.name, h.Values("Vary"))
		}
		if !tc.allowed {
			continue
		}
		if tc.method == "OPTIONS" {
			methods, headers := h.Get("Access-Control-Allow-Methods"), strings.ToLower(h.Get("Access-Control-Allow-Headers"))
			if rec.Code != http.StatusNoContent || !strings.Contains(methods, "PATCH") || !strings.Contains(methods, "DELETE") ||
				!strings.Contains(headers, "authorization") || !strings.Contains(headers, "idempotency-key") {
				t.Errorf("%s: %d, methods %q, headers %q", tc.name, rec.Code, methods, headers)
			}
		} else if exp := strings.ToLower(h.Get("Access-Control-Expose-Headers")); !strings.Contains(exp, "x-request-id") {
			t.Errorf("%s: X-Request-ID not exposed (%q)", tc.name, exp)
		}
	}
}

// TestCORSOffAndWildcard: no origins configured means no CORS headers for
// anyone; "*" allows every origin, still without credentials.
func TestCORSOffAndWildcard(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		origins []string
		want    string
	}{{nil, ""}, {[]string{"*"}, "*"}} {
		b := setupFullWith(t, httpapi.Options{CORSAllowedOrigins: tc.origins})
		for _, method := range []string{"GET", "OPTIONS"} {
			rec := b.call(t, method, "/api/v1/posts", "", nil, nil,
				"Origin", "https://anywhere.example", "Access-Control-Request-Method", "POST")
			if got := rec.Header().Get("Access-Control-Allow-Origin"); got != tc.want {
				t.Errorf("origins %v, %s: Access-Control-Allow-Origin = %q, want %q", tc.origins, method, got, tc.want)
			}
			if rec.Header().Get("Access-Control-Allow-Credentials") != "" {
				t.Errorf("origins %v: credentials allowed", tc.origins)
			}
		}
	}
	// CORS_ALLOWED_ORIGINS refuses "*" mixed with origins, and anything
	// that is not an origin.
	for _, v := range []string{"*,https://app.example.com", "app.example.com", "https://app.example.com/path"} {
		env := map[string]string{"DATABASE_URL": "postgres://u:p@127.0.0.1:1/db", "REDIS_URL": "redis://127.0.0.1:1/0",
			"JWT_SECRET": testSecret, "CORS_ALLOWED_ORIGINS": v}
		if _, err := config.Load(func(k string) string { return env[k] }, config.RoleAPI); err == nil ||
			!strings.Contains(err.Error(), "CORS_ALLOWED_ORIGINS") {
			t.Errorf("CORS_ALLOWED_ORIGINS=%q: err = %v", v, err)
		}
	}
}

// TestSecurityHeaders: every response, success or error, API or not,
// carries the security headers; API responses are JSON, never cached and
// under a CSP that forbids everything.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	cases := []struct {
		method, path, authz string
		body                any
		status              int
	}{
		{"GET", "/api/v1/posts", "", nil, 200},
		{"GET", "/api/v1/openapi.json", "", nil, 200},
		{"GET", "/api/v1/users/me", f.authz[owner], nil, 200},
		{"GET", "/api/v1/users/me", "", nil, 401},
		{"GET", "/api/v1/users", f.authz[owner], nil, 403},
		{"GET", "/api/v1/posts/999", "", nil, 404},
		{"GET", "/api/v1/nothing", "", nil, 404},
		{"POST", "/api/v1/posts", f.authz[owner], `{"title":`, 400},
		{"POST", "/api/v1/posts", f.authz[owner], map[string]any{}, 422},
		{"GET", "/healthz", "", nil, 200},
		{"GET", "/metrics", "", nil, 200},
	}
	for _, tc := range cases {
		rec := b.call(t, tc.method, tc.path, tc.authz, tc.body, nil)
		h := rec.Header()
		if rec.Code != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, rec.Code, tc.status)
		}
		for k, v := range map[string]string{
			"X-Content-Type-Options":     "nosniff",
			"X-Frame-Options":            "DENY",
			"Referrer-Policy":            "no-referrer",
			"Cross-Origin-Opener-Policy": "same-origin",
		} {
			if got := h.Get(k); got != v {
				t.Errorf("%s %s: %s = %q, want %q", tc.method, tc.path, k, got, v)
			}
		}
		if h.Get("Strict-Transport-Security") != "" {
			t.Errorf("%s %s: HSTS over plain HTTP", tc.method, tc.path)
		}
		if h.Get("X-Request-ID") == "" {
			t.Errorf("%s %s: no X-Request-ID", tc.method, tc.path)
		}
		if !strings.HasPrefix(tc.path, "/api/") {
			continue
		}
		if !strings.HasPrefix(h.Get("Content-Type"), "application/json") || h.Get("Cache-Control") != "no-store" ||
			!strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("%s %s: Content-Type %q, Cache-Control %q, CSP %q", tc.method, tc.path,
				h.Get("Content-Type"), h.Get("Cache-Control"), h.Get("Content-Security-Policy"))
		}
	}
	// Behind a TLS-terminating proxy: HSTS.
	rec := b.call(t, "GET", "/api/v1/posts", "", nil, nil, "X-Forwarded-Proto", "https")
	if !strings.Contains(rec.Header().Get("Strict-Transport-Security"), "max-age=") {
		t.Errorf("no HSTS behind HTTPS: %q", rec.Header().Get("Strict-Transport-Security"))
	}
}

// TestJSONBodies: every endpoint that takes a JSON body answers malformed
// JSON with 400, wrong types, missing and unknown fields with 422 naming
// them, and other media types with 415. The table must cover every
// operation openapi.json documents with a request body.
func TestJSONBodies(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	f := newFixtures(t, b)
	post, sched := f.post(t, false), f.schedule(t)
	cases := []struct {
		route     string // as documented
		path      string
		authz     string
		wrongType string // a body with one field of the wrong type…
		typeField string // …which the 422 names
		missing   []string
	}{
		{"POST /api/v1/auth/register", "/api/v1/auth/register", "", `{"email":1}`, "email", []string{"email", "password", "name"}},
		{"POST /api/v1/auth/login", "/api/v1/auth/login", "", `{"email":["a"]}`, "email", []string{"email", "password"}},
		{"POST /api/v1/posts", "/api/v1/posts", f.authz[owner], `{"title":true}`, "title", []string{"title"}},
		{"PATCH /api/v1/posts/{id}", post, f.authz[owner], `{"published":"yes"}`, "published", nil},
		{"POST /api/v1/orders", "/api/v1/orders", f.authz[owner], `{"currency":1}`, "currency", []string{"items", "currency"}},
		{"POST /api/v1/tasks", "/api/v1/tasks", "Bearer " + token, `{"type":1}`, "type", []string{"type"}},
		{"POST /api/v1/tasks/batch", "/api/v1/tasks/batch", "Bearer " + token, `{"tasks":1}`, "tasks", []string{"tasks"}},
		{"POST /api/v1/schedules", "/api/v1/schedules", "Bearer " + token, `{"name":1}`, "name", []string{"name", "spec", "task_type"}},
		{"POST /api/v1/workflows", "/api/v1/workflows", "Bearer " + token, `{"steps":1}`, "steps", []string{"steps"}},
		{"PATCH /api/v1/schedules/{name}", sched, "Bearer " + token, `{"enabled":"yes"}`, "enabled", nil},
		{"PUT /api/v1/task-types/{type}/limits", "/api/v1/task-types/system:ping/limits", "Bearer " + token, `{"rate":5}`, "rate", nil},
	}

	doc := fetchOpenAPI(t, b)
	covered := map[string]bool{}
	for _, tc := range cases {
		covered[tc.route] = true
	}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if r := strings.ToUpper(method) + " " + path; op.RequestBody != nil && !covered[r] {
				t.Errorf("%s takes a body but has no row here", r)
			}
		}
	}

	type check struct {
		name        string
		body        string
		contentType string
		status      int
		fields      []string
	}
	for _, tc := range cases {
		method, _, _ := strings.Cut(tc.route, " ")
		checks := []check{
			{"malformed", `{"x":`, "application/json", 400, nil},
			{"not an object", `[]`, "application/json", 400, nil},
			{"a string", `"hello"`, "application/json", 400, nil},
			{"two objects", `{} {}`, "application/json", 400, nil},
			{"empty", ``, "application/json", 400, nil},
			{"unknown field", `{"zz_unknown":1}`, "application/json", 422, []string{"zz_unknown"}},
			{"wrong type", tc.wrongType, "application/json; charset=utf-8", 422, []string{tc.typeField}},
			{"form", `a=b`, "application/x-www-form-urlencoded", 415, nil},
			{"JSON-like media type", `{}`, "application/jsonx", 415, nil},
			{"text", `{}`, "text/plain", 415, nil},
		}
		if tc.missing != nil {
			checks = append(checks, check{"missing fields", `{}`, "application/json", 422, tc.missing})
		}
		for _, c := range checks {
			hdr := []string{"Content-Type", c.contentType}
			var e errorBody
			rec := b.call(t, method, tc.path, tc.authz, c.body, &e, hdr...)
			if rec.Code != c.status || e.Error.Code == "" || e.Error.Message == "" || len(e.Error.Fields) != len(c.fields) {
				t.Errorf("%s, %s: %d %s; want %d naming %v", tc.route, c.name, rec.Code, rec.Body, c.status, c.fields)
				continue
			}
			for _, name := range c.fields {
				if e.Error.Fields[name] == "" {
					t.Errorf("%s, %s: fields %v do not name %q", tc.route, c.name, e.Error.Fields, name)
				}
			}
		}
	}
}
