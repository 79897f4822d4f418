// Package auth holds Conveyor's credentials logic, free of HTTP: password
// hashing (bcrypt), access tokens (JWT, HS256 only), API keys for services
// and the login failure limiter. internal/httpapi turns these into
// middleware; cmd/api's createuser and createkey use them directly.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// Errors callers branch on.
var (
	ErrInvalidToken = errors.New("invalid or expired token")
	ErrBadPassword  = errors.New("wrong password")
)

// MinPasswordLen is the shortest password accepted at registration.
const MinPasswordLen = 8

// HashPassword hashes password with bcrypt at cost (bcrypt.DefaultCost when
// cost is 0). bcrypt reads at most 72 bytes; longer passwords are refused
// rather than silently truncated.
func HashPassword(password string, cost int) (string, error) {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword compares password with hash in constant time. An empty hash
// (a user without a password) never matches.
func CheckPassword(hash, password string) error {
	if hash == "" {
		return ErrBadPassword
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)); err != nil {
		return ErrBadPassword
	}
	return nil
}

// dummyHash (bcrypt, DefaultCost) is compared against when a login names an
// unknown email, so that unknown and known emails take the same time to fail.
const dummyHash = "$2a$10$s9nx3LwBRLjsfzagI9NO4uXAcOHtt6xJwxJNOChmu5thjHON5EayW"

// WasteTime spends a password check's worth of time (see dummyHash).
func WasteTime(password string) {
	_ = bcrypt.CompareHashAndPassword([]byte(dummyHash), []byte(password))
}

// Tokens issues and verifies access tokens: JWTs signed with HS256 and a
// shared secret. Verification accepts HS256 only, so a token cannot pick its
// own algorithm ("none", or an asymmetric one keyed with the secret).
type Tokens struct {
	secret []byte
	ttl    time.Duration
	now    func() time.Time
}

// NewTokens returns a Tokens signing with secret; tokens live for ttl.
func NewTokens(secret []byte, ttl time.Duration) *Tokens {
	return &Tokens{secret: secret, ttl: ttl, now: time.Now}
}

// TTL is how long an issued token is valid.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// Issue returns a signed token for userID.
func (t *Tokens) Issue(userID int64) (string, error) {
	now := t.now()
	claims := jwt.RegisteredClaims{
		Subject:   strconv.FormatInt(userID, 10),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(t.ttl)),
		Issuer:    "conveyor",
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(t.secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// Verify checks token's signature, algorithm and expiry and returns the user
// ID it was issued for. Every failure is ErrInvalidToken.
func (t *Tokens) Verify(token string) (int64, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return t.secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithIssuer("conveyor"),
		jwt.WithTimeFunc(t.now), jwt.WithLeeway(5*time.Second))
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%w: bad subject", ErrInvalidToken)
	}
	return id, nil
}

// RandomSecret returns n random bytes (DEV_MODE's per-process JWT secret).
func RandomSecret(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// APIKeyPrefix starts every generated API key, so keys are recognisable
// in logs and secret scanners.
const APIKeyPrefix = "cvk_"

// NewAPIKey returns a new random API key (256 bits) and the hash to store.
func NewAPIKey() (key, hash string) {
	key = APIKeyPrefix + base64.RawURLEncoding.EncodeToString(RandomSecret(32))
	return key, HashAPIKey(key)
}

// HashAPIKey is the stored form of an API key: SHA-256, hex. Keys are random
// and long, so a slow password hash would add nothing but latency.
func HashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// DeriveKey derives a key for one purpose from a server secret (HMAC-SHA256
// of the purpose), so one configured secret can key several things without
// a value from one use being valid in another.
func DeriveKey(secret []byte, purpose string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("conveyor:" + purpose))
	return m.Sum(nil)
}
