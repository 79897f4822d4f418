package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestPasswordHashRoundTrip(t *testing.T) {
	t.Parallel()
	h, err := HashPassword("correct horse", bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h, "correct horse") {
		t.Fatal("hash contains the password")
	}
	if err := CheckPassword(h, "correct horse"); err != nil {
		t.Fatal(err)
	}
	if err := CheckPassword(h, "wrong horse"); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("wrong password: err = %v", err)
	}
	if err := CheckPassword("", "anything"); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("empty hash: err = %v", err)
	}
	if _, err := HashPassword(strings.Repeat("x", 73), bcrypt.MinCost); err == nil {
		t.Fatal("a password over 72 bytes must be refused, not truncated")
	}
	if _, err := bcrypt.Cost([]byte(dummyHash)); err != nil {
		t.Fatalf("dummyHash is not a bcrypt hash: %v", err)
	}
}

func TestTokensIssueVerify(t *testing.T) {
	t.Parallel()
	tok := NewTokens(secret, time.Hour)
	s, err := tok.Issue(42)
	if err != nil {
		t.Fatal(err)
	}
	id, err := tok.Verify(s)
	if err != nil || id != 42 {
		t.Fatalf("Verify = %d, %v", id, err)
	}
}

func TestTokensRejectForgedAndExpired(t *testing.T) {
	t.Parallel()
	tok := NewTokens(secret, time.Hour)
	now := time.Now()
	sign := func(m jwt.SigningMethod, key any, claims jwt.RegisteredClaims) string {
		s, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid := jwt.RegisteredClaims{Subject: "7", Issuer: "conveyor", IssuedAt: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
	expired := valid
	expired.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute))
	noExp := valid
	noExp.ExpiresAt = nil
	badSub := valid
	badSub.Subject = "admin"

	cases := map[string]string{
		"alg none":         sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid),
		"HS512 not pinned": sign(jwt.SigningMethodHS512, secret, valid),
		"other secret":     sign(jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), valid),
		"expired":          sign(jwt.SigningMethodHS256, secret, expired),
		"no exp":           sign(jwt.SigningMethodHS256, secret, noExp),
		"bad subject":      sign(jwt.SigningMethodHS256, secret, badSub),
		"garbage":          "not.a.jwt",
	}
	for name, s := range cases {
		if _, err := tok.Verify(s); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", name, err)
		}
	}
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	k1, h1 := NewAPIKey()
	k2, h2 := NewAPIKey()
	if !strings.HasPrefix(k1, APIKeyPrefix) || len(k1) < 40 || k1 == k2 || h1 == h2 {
		t.Fatalf("keys %q %q", k1, k2)
	}
	if HashAPIKey(k1) != h1 || strings.Contains(h1, k1) {
		t.Fatal("hash mismatch")
	}
}

func TestLimiter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	l := NewLimiter(3, time.Minute)
	l.now = func() time.Time { return now }
	for i := range 3 {
		if ok, _ := l.Attempt(ctx, "a|1.2.3.4"); !ok {
			t.Fatalf("refused after %d attempts", i)
		}
	}
	ok, wait := l.Attempt(ctx, "a|1.2.3.4")
	if ok || wait != time.Minute {
		t.Fatalf("after 3 attempts: ok=%v wait=%v", ok, wait)
	}
	if ok, _ := l.Attempt(ctx, "a|5.6.7.8"); !ok {
		t.Fatal("another IP must not be refused")
	}
	now = now.Add(time.Minute)
	if ok, _ := l.Attempt(ctx, "a|1.2.3.4"); !ok {
		t.Fatal("still refused after the window")
	}
	l.Attempt(ctx, "b|x")
	l.Reset(ctx, "b|x")
	if len(l.entries) > 2 {
		t.Fatalf("entries not swept: %d", len(l.entries))
	}
	for range 3 {
		l.Attempt(ctx, "c|x")
	}
	l.Reset(ctx, "c|x") // a successful login
	if ok, _ := l.Attempt(ctx, "c|x"); !ok {
		t.Fatal("refused after a reset")
	}
}

func TestEmailVerifier(t *testing.T) {
	t.Parallel()
	v := NewEmailVerifier([]byte("0123456789abcdef0123456789abcdef"))
	tok := v.Token(42, "Ada@Example.com")
	id, err := v.Parse(tok)
	if err != nil || id != 42 {
		t.Fatalf("parse: %d %v", id, err)
	}
	if err := v.Check(tok, 42, "ada@example.com"); err != nil {
		t.Fatalf("valid token: %v", err)
	}
	other := NewEmailVerifier([]byte("another-secret-0123456789abcdef01"))
	for name, err := range map[string]error{
		"another address":    v.Check(tok, 42, "eve@example.com"),
		"another user":       v.Check(tok, 43, "ada@example.com"),
		"another key":        other.Check(tok, 42, "ada@example.com"),
		"a changed expiry":   v.Check(strings.Replace(tok, ".", ".9", 1), 42, "ada@example.com"),
		"a truncated token":  v.Check(tok[:len(tok)-2], 42, "ada@example.com"),
		"not a token at all": v.Check("x", 42, "ada@example.com"),
	} {
		if !errors.Is(err, ErrBadEmailToken) {
			t.Errorf("%s: %v", name, err)
		}
	}
	v.now = func() time.Time { return time.Now().Add(EmailTokenTTL + time.Minute) }
	if err := v.Check(tok, 42, "ada@example.com"); !errors.Is(err, ErrBadEmailToken) {
		t.Fatalf("expired token: %v", err)
	}
}
