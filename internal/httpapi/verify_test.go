package httpapi_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/httpapi"
	"github.com/conveyor-run/conveyor/internal/store"
	"github.com/conveyor-run/conveyor/internal/testenv"
)

// The welcome email's link proves the address; forged, other users' and
// stale links (the address changed) do not.
func TestVerifyEmail(t *testing.T) {
	t.Parallel()
	d, _ := testenv.DB(t)
	v := auth.NewEmailVerifier([]byte(testSecret))
	b := &productBundle{db: d, srv: httpapi.NewServer(httpapi.Options{BodyLimit: 1 << 16, BcryptCost: bcrypt.MinCost},
		httpapi.Deps{Log: testenv.Logger(t), DB: d, Tokens: auth.NewTokens([]byte(testSecret), time.Hour), Verifier: v})}
	u, _ := b.register(t, "ada@example.com")
	users := store.NewUsers(d)
	verified := func() bool {
		got, err := users.Get(context.Background(), u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.EmailVerifiedAt != nil
	}
	if verified() {
		t.Fatal("a registered address counts as proven before its link was followed")
	}
	get := func(token string) int {
		return b.call(t, "GET", "/api/v1/auth/verify-email?token="+url.QueryEscape(token), "", nil, nil).Code
	}
	for name, tok := range map[string]string{
		"forged":             v.Token(u.ID, "ada@example.com") + "x",
		"another address":    v.Token(u.ID, "eve@example.com"),
		"another key":        auth.NewEmailVerifier([]byte("another-secret-0123456789abcdef01")).Token(u.ID, "ada@example.com"),
		"no such user":       v.Token(u.ID+1000, "ada@example.com"),
		"empty":              "",
		"id beyond int64":    "99999999999999999999.1.x",
		"not a token at all": "\u0000",
	} {
		if code := get(tok); code != http.StatusUnprocessableEntity || verified() {
			t.Fatalf("%s: %d (verified %v), want 422", name, code, verified())
		}
	}
	good := v.Token(u.ID, "ADA@example.com") // addresses compare case-insensitively
	for range 2 {                            // following the link twice is fine
		if code := get(good); code != http.StatusOK || !verified() {
			t.Fatalf("valid link: %d", code)
		}
	}
	// A link for an address the account no longer has stops working.
	if _, err := d.ExecContext(context.Background(), `UPDATE users SET email = 'ada2@example.com', email_verified_at = NULL WHERE id = $1`, u.ID); err != nil {
		t.Fatal(err)
	}
	if code := get(good); code != http.StatusUnprocessableEntity || verified() {
		t.Fatalf("stale link: %d", code)
	}
}
