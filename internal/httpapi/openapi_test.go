package httpapi_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// openAPIDoc is the part of the OpenAPI document the tests check.
type openAPIDoc struct {
	OpenAPI string `json:"openapi"`
	Info    struct {
		Title   string `json:"title"`
		Version string `json:"version"`
	} `json:"info"`
	Paths map[string]map[string]openAPIOperation `json:"paths"`
}

type openAPIParam struct {
	Name string `json:"name"`
	In   string `json:"in"`
}

type openAPIOperation struct {
	Parameters  []openAPIParam             `json:"parameters"`
	RequestBody json.RawMessage            `json:"requestBody"`
	Responses   map[string]json.RawMessage `json:"responses"`
	Security    []map[string][]string      `json:"security"`
}

// fetchOpenAPI gets the document the way a client does.
func fetchOpenAPI(t *testing.T, b *productBundle) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	rec := b.call(t, "GET", "/api/v1/openapi.json", "", nil, &doc)
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("openapi.json: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	return doc
}

// operation returns the documented operation for "METHOD /path/{param}".
func (d openAPIDoc) operation(route string) (openAPIOperation, bool) {
	method, path, _ := strings.Cut(route, " ")
	op, ok := d.Paths[path][strings.ToLower(method)]
	return op, ok
}

var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// apiRoutes lists the server's routes as "METHOD /path/{param}", leaving
// out the dashboard (Asynqmon's own UI, not part of the API) and Echo's
// internal not-found routes that group middleware registers.
func apiRoutes(t *testing.T, srv http.Handler) []string {
	t.Helper()
	e, ok := srv.(*echo.Echo)
	if !ok {
		t.Fatalf("NewServer returned %T, not *echo.Echo", srv)
	}
	var out []string
	for _, r := range e.Routes() {
		if r.Method == echo.RouteNotFound || strings.HasPrefix(r.Path, "/monitoring") {
			continue
		}
		path := echoParam.ReplaceAllString(r.Path, "{$1}")
		out = append(out, r.Method+" "+path)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestOpenAPIListsEveryRoute fails when a route is added to routes.go
// without being documented, or when the document describes a route that
// does not exist.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	doc := fetchOpenAPI(t, b)
	if !strings.HasPrefix(doc.OpenAPI, "3.") || doc.Info.Title == "" || doc.Info.Version == "" {
		t.Fatalf("not an OpenAPI 3 document: openapi=%q info=%+v", doc.OpenAPI, doc.Info)
	}
	routes := apiRoutes(t, b.srv)
	if len(routes) < 25 {
		t.Fatalf("only %d routes found; is the walk broken? %v", len(routes), routes)
	}
	for _, r := range routes {
		if _, ok := doc.operation(r); !ok {
			t.Errorf("route %s is missing from openapi.json", r)
		}
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			r := strings.ToUpper(method) + " " + path
			if _, found := slices.BinarySearch(routes, r); !found {
				t.Errorf("openapi.json documents %s, which is not a route", r)
			}
		}
	}
}

// TestOpenAPIOperationsAreComplete checks what a client generator needs from
// every operation: its path parameters declared, and at least one response.
func TestOpenAPIOperationsAreComplete(t *testing.T) {
	t.Parallel()
	b := setupFull(t)
	doc := fetchOpenAPI(t, b)
	pathParam := regexp.MustCompile(`\{([^}]+)\}`)
	for path, ops := range doc.Paths {
		for method, op := range ops {
			route := strings.ToUpper(method) + " " + path
			if len(op.Responses) == 0 {
				t.Errorf("%s documents no responses", route)
			}
			for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
				if !slices.ContainsFunc(op.Parameters, func(p openAPIParam) bool {
					return p.Name == m[1] && p.In == "path"
				}) {
					t.Errorf("%s does not declare its path parameter %q", route, m[1])
				}
			}
			if strings.HasPrefix(path, "/api/v1/") && op.Security == nil {
				t.Errorf("%s does not say who may call it (security)", route)
			}
		}
	}
}
