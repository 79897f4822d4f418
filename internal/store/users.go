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
	// EmailVerifiedAt is when the owner proved the address (nil: not yet).
	EmailVerifiedAt *time.Time `db:"email_verified_at" json:"email_verified_at"`
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

const userCols = `id, email, name, password_hash, role, created_at, email_verified_at`

// Create inserts u and fills its ID and CreatedAt. A duplicate email (case
// insensitive) is ErrConflict.
func (r *Users) Create(ctx context.Context, u *User) error {
	if u.Role == "" {
		u.Role = RoleUser
	}
	err := r.q.QueryRowxContext(ctx,
		`INSERT INTO users (email, name, password_hash, role, email_verified_at) VALUES ($1, $2, $3, $4, $5)
		 RETURNING id, created_at`,
		u.Email, u.Name, u.PasswordHash, u.Role, u.EmailVerifiedAt).Scan(&u.ID, &u.CreatedAt)
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

// UserProfile is a user with the number of posts they wrote, computed in
// SQL (an aggregate over posts, never a loop).
type UserProfile struct {
	User
	PostCount int64 `db:"post_count" json:"post_count"`
}

// profileSelect selects users with their post count: published posts only,
// or drafts too (for the author themself and admins).
func profileSelect(withDrafts bool) string {
	published := ` AND p.published`
	if withDrafts {
		published = ``
	}
	return `SELECT u.id, u.email, u.name, u.password_hash, u.role, u.created_at, u.email_verified_at,
       (SELECT count(*) FROM posts p WHERE p.author_id = u.id` + published + `) AS post_count
  FROM users u`
}

// Profile returns user id with its post count; drafts count only when
// withDrafts is set, so other users cannot learn how many drafts one has.
func (r *Users) Profile(ctx context.Context, id int64, withDrafts bool) (UserProfile, error) {
	var u UserProfile
	err := r.q.GetContext(ctx, &u, profileSelect(withDrafts)+` WHERE u.id = $1`, id)
	return u, mapErr(err, fmt.Sprintf("get user %d", id))
}

// List returns one page of users (oldest first) with their post counts,
// drafts included (it is for admins), and the total number of users.
func (r *Users) List(ctx context.Context, p Page) ([]UserProfile, int64, error) {
	out := []UserProfile{}
	if err := r.q.SelectContext(ctx, &out, profileSelect(true)+` ORDER BY u.id OFFSET $1 LIMIT $2`, p.Skip, p.Limit); err != nil {
		return nil, 0, mapErr(err, "list users")
	}
	var total int64
	if err := r.q.GetContext(ctx, &total, `SELECT count(*) FROM users`); err != nil {
		return nil, 0, mapErr(err, "count users")
	}
	return out, total, nil
}

// MarkEmailVerified records that the owner of user id proved email, which
// must still be the account's address (compared case-insensitively). It
// returns ErrNotFound when no such user has that address; verifying twice
// keeps the first time.
func (r *Users) MarkEmailVerified(ctx context.Context, id int64, email string) error {
	res, err := r.q.ExecContext(ctx,
		`UPDATE users SET email_verified_at = coalesce(email_verified_at, now())
		  WHERE id = $1 AND lower(email) = lower($2)`, id, email)
	if err != nil {
		return mapErr(err, fmt.Sprintf("verify email of user %d", id))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}
