package httpapi

import (
	"strings"

	"github.com/labstack/echo/v4"
)

// securityHeaders sets the headers every response carries. API responses
// (JSON, never HTML) also get a CSP that forbids everything and no-store
// caching; other paths (the dashboard) set their own policies.
//
// The values are built once and shared by every response: net/http writes
// a header's values, never changes them in place, and Header.Add on one of
// them copies (each slice's capacity is its length). Header.Set would
// canonicalise the name and allocate a slice, per header and request.
func securityHeaders() echo.MiddlewareFunc {
	type header struct {
		name  string // canonical
		value []string
	}
	every := []header{
		{"X-Content-Type-Options", []string{"nosniff"}},
		{"X-Frame-Options", []string{"DENY"}},
		{"Referrer-Policy", []string{"no-referrer"}},
		{"Cross-Origin-Opener-Policy", []string{"same-origin"}},
	}
	api := []header{
		{"Content-Security-Policy", []string{"default-src 'none'; frame-ancestors 'none'"}},
		{"Cache-Control", []string{"no-store"}},
	}
	hsts := []string{"max-age=31536000; includeSubDomains"}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Response().Header()
			for _, kv := range every {
				h[kv.name] = kv.value
			}
			req := c.Request()
			if req.TLS != nil || strings.EqualFold(req.Header.Get("X-Forwarded-Proto"), "https") {
				h["Strict-Transport-Security"] = hsts
			}
			if strings.HasPrefix(req.URL.Path, "/api/") {
				for _, kv := range api {
					h[kv.name] = kv.value
				}
			}
			return next(c)
		}
	}
}
