package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// ErrBadEmailToken: a verification token that is malformed, forged,
// expired, or for an address the account no longer has.
var ErrBadEmailToken = errors.New("invalid or expired email verification token")

// EmailTokenTTL is how long a verification link works.
const EmailTokenTTL = 7 * 24 * time.Hour

// EmailVerifier signs and checks the links that prove an email address:
// "<user id>.<expiry unix>.<HMAC-SHA256 of id, lower-cased address and
// expiry>". The address is in the MAC but not in the token, so a link for an
// account whose address changed no longer works, and the link reveals
// nothing. The key is derived from JWT_SECRET, so the worker (which writes
// the link into the welcome email) and every api replica (which checks it)
// agree without another secret.
type EmailVerifier struct {
	key []byte
	now func() time.Time
}

// NewEmailVerifier derives its key from secret.
func NewEmailVerifier(secret []byte) *EmailVerifier {
	return &EmailVerifier{key: DeriveKey(secret, "email verification"), now: time.Now}
}

// Token returns the token proving email for user id, valid EmailTokenTTL.
func (v *EmailVerifier) Token(id int64, email string) string {
	exp := v.now().Add(EmailTokenTTL).Unix()
	return strconv.FormatInt(id, 10) + "." + strconv.FormatInt(exp, 10) + "." + v.mac(id, email, exp)
}

func (v *EmailVerifier) mac(id int64, email string, exp int64) string {
	m := hmac.New(sha256.New, v.key)
	m.Write([]byte(strconv.FormatInt(id, 10) + "\x00" + strings.ToLower(email) + "\x00" + strconv.FormatInt(exp, 10)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Parse reads the user ID a token claims, before its address is known.
func (v *EmailVerifier) Parse(token string) (int64, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || len(token) > 200 {
		return 0, ErrBadEmailToken
	}
	id, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || id <= 0 {
		return 0, ErrBadEmailToken
	}
	return id, nil
}

// Check verifies that token proves email for user id and has not expired.
func (v *EmailVerifier) Check(token string, id int64, email string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ErrBadEmailToken
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || parts[0] != strconv.FormatInt(id, 10) {
		return ErrBadEmailToken
	}
	if !hmac.Equal([]byte(parts[2]), []byte(v.mac(id, email, exp))) || v.now().Unix() > exp {
		return ErrBadEmailToken
	}
	return nil
}
