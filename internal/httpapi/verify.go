package httpapi

import (
	"errors"
	"net/http"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/store"
)

// handleVerifyEmail proves a user's address with the signed link of the
// welcome email (GET /api/v1/auth/verify-email?token=…). From then on the
// user's order confirmations carry their details and are never limited.
// Following the link twice is fine; a forged, expired or stale link (the
// account's address changed) is a 422.
func handleVerifyEmail(d *sqlx.DB, v *auth.EmailVerifier) echo.HandlerFunc {
	type response struct {
		Email         string `json:"email"`
		EmailVerified bool   `json:"email_verified"`
	}
	bad := errValidation(map[string]string{"token": "is invalid or expired: use the link of your latest welcome email"})
	return func(c echo.Context) error {
		token := c.QueryParam("token")
		id, err := v.Parse(token)
		if err != nil {
			return bad
		}
		ctx := c.Request().Context()
		users := store.NewUsers(d)
		u, err := users.Get(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return bad
		}
		if err != nil {
			return err
		}
		if err := v.Check(token, u.ID, u.Email); err != nil {
			return bad
		}
		if err := users.MarkEmailVerified(ctx, u.ID, u.Email); errors.Is(err, store.ErrNotFound) {
			return bad // the address changed between the two statements
		} else if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, response{Email: u.Email, EmailVerified: true})
	}
}
