package httpapi

import (
	"slices"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// cors allows browsers on origins (CORS_ALLOWED_ORIGINS) to call the API.
// Credentials are bearer tokens in a header, never cookies, so credentialed
// CORS is never enabled: "*" can therefore never be combined with
// credentials. No origins: no CORS headers, browsers stay same-origin.
func cors(origins []string) echo.MiddlewareFunc {
	if len(origins) == 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOrigins:     slices.Clone(origins),
		AllowMethods:     []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"},
		AllowHeaders:     []string{echo.HeaderAuthorization, echo.HeaderContentType, "Idempotency-Key", echo.HeaderXRequestID},
		ExposeHeaders:    []string{echo.HeaderXRequestID, "Idempotent-Replayed", "Retry-After"},
		AllowCredentials: false,
		MaxAge:           600,
	})
}
