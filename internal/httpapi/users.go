package httpapi

import (
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/store"
)

// userResponse is a user as the API shows it. Email and role are shown to
// the user themself and to admins only.
type userResponse struct {
	ID        int64     `json:"id"`
	Email     string    `json:"email,omitempty"`
	Name      string    `json:"name"`
	Role      string    `json:"role,omitempty"`
	PostCount int64     `json:"post_count"`
	CreatedAt time.Time `json:"created_at"`
}

func newUserResponse(u store.UserProfile, full bool) userResponse {
	r := userResponse{ID: u.ID, Name: u.Name, PostCount: u.PostCount, CreatedAt: u.CreatedAt}
	if full {
		r.Email, r.Role = u.Email, u.Role
	}
	return r
}

// handleUserMe shows the caller (GET /api/v1/users/me).
func handleUserMe(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		u, err := store.NewUsers(d).Profile(c.Request().Context(), currentPrincipal(c).User.ID, true)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, newUserResponse(u, true))
	}
}

// handleUserList lists users with their post counts (GET /api/v1/users, admin).
func handleUserList(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		page, err := parsePage(c)
		if err != nil {
			return err
		}
		users, total, err := store.NewUsers(d).List(c.Request().Context(), page)
		if err != nil {
			return err
		}
		out := listResponse[userResponse]{Data: make([]userResponse, len(users)), Total: total}
		for i, u := range users {
			out.Data[i] = newUserResponse(u, true)
		}
		return c.JSON(http.StatusOK, out)
	}
}

// handleUserGet shows one user with their post count
// (GET /api/v1/users/{id}, any authenticated caller).
func handleUserGet(d *sqlx.DB) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := pathID(c, "id", "user")
		if err != nil {
			return err
		}
		p := currentPrincipal(c)
		full := p.admin() || (p.User != nil && p.User.ID == id)
		// Drafts count only for their author and admins, as they are seen.
		u, err := store.NewUsers(d).Profile(c.Request().Context(), id, full)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, newUserResponse(u, full))
	}
}
