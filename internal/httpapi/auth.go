package httpapi

import (
	"crypto/subtle"
	"strings"

	"github.com/labstack/echo/v4"
)

// requireToken admits requests carrying "Authorization: Bearer <token>".
// The comparison is constant-time; an empty configured token admits nobody.
func requireToken(token string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Request().Header.Get(echo.HeaderAuthorization)
			scheme, got, ok := strings.Cut(h, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") || got == "" {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="conveyor"`)
				return errUnauthorized("missing bearer token")
			}
			if token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="conveyor", error="invalid_token"`)
				return errUnauthorized("invalid token")
			}
			return next(c)
		}
	}
}
