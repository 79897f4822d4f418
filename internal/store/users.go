package store

import (
	"context"
	"fmt"
	"time"
)

// User is a row of users. PasswordHash never leaves the server: the JSON tag
// hides it from every response built from this struct.
type User struct {
	ID           int64     `db:"id" json:"id"`
	Email        string    `db:"email" json:"email"`
	Name         string    `db:"name" json:"name"`
	PasswordHash string    `db:"password_hash" json:"-"`
	Role         string    `db:"role" json:"role"`
	CreatedAt    time.Time `db:"created_at" json:"created_at"`
}

// Roles.
const (
	RoleUser  = "user"
	RoleAdmin = "admin"
)

// Users is the users repository.
type Users struct{ q Querier }

// NewUsers returns a repository over q.
func NewUsers(q Querier) *Users { return &Users{q: q} }

const userCols = `id, email, name, password_hash, role, created_at`

// Create inserts u and fills its ID and CreatedAt. A duplicate email (case
// insensitive) is ErrConflict.
func (r *Users) Create(ctx context.Context, u *User) error {
	if u.Role == "" {
		u.Role = RoleUser
	}
	err := r.q.QueryRowxContext(ctx,
		`INSERT INTO users (email, name, password_hash, role) VALUES ($1, $2, $3, $4)
		 RETURNING id, created_at`,
		u.Email, u.Name, u.PasswordHash, u.Role).Scan(&u.ID, &u.CreatedAt)
	return mapErr(err, "create user")
}

// Get returns the user with id.
func (r *Users) Get(ctx context.Context, id int64) (User, error) {
	var u User
	err := r.q.GetContext(ctx, &u, `SELECT `+userCols+` FROM users WHERE id = $1`, id)
	return u, mapErr(err, fmt.Sprintf("get user %d", id))
}

// GetByEmail returns the user with email, compared case-insensitively.
func (r *Users) GetByEmail(ctx context.Context, email string) (User, error) {
	var u User
	err := r.q.GetContext(ctx, &u, `SELECT `+userCols+` FROM users WHERE lower(email) = lower($1)`, email)
	return u, mapErr(err, "get user by email")
}
