package httpapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/db"
	"github.com/conveyor-run/conveyor/internal/service"
	"github.com/conveyor-run/conveyor/internal/store"
)

// principal is who made a request: a user (by JWT) or a service (by API key
// or the bootstrap API_TOKEN). The zero value is an anonymous caller.
type principal struct {
	// UserID is the user a JWT names; 0 for services.
	UserID int64
	// User is that user as stored, read on every request, except on a
	// route whose own write checks that the user exists (authenticate's
	// byWrite): nil there, and for services.
	User   *store.User
	APIKey string // the key's name for services ("API_TOKEN" for the bootstrap token)
}

func (p principal) anonymous() bool { return p.UserID == 0 && p.APIKey == "" }

// admin: an admin user or any service key. Keys act as admin for the task
// and queue endpoints.
func (p principal) admin() bool {
	return p.APIKey != "" || (p.User != nil && p.User.Role == store.RoleAdmin)
}

// owner names the caller for per-caller state such as idempotency keys.
func (p principal) owner() string {
	if p.UserID != 0 {
		return "user:" + strconv.FormatInt(p.UserID, 10)
	}
	return "key:" + p.APIKey
}

const ctxPrincipal = "principal"

func currentPrincipal(c echo.Context) principal {
	p, _ := c.Get(ctxPrincipal).(principal)
	return p
}

// bootstrapKeyName is the principal name of the API_TOKEN key. Key names
// from createkey are lower case, so no key can share it (and with it the
// bootstrap token's idempotency keys).
const bootstrapKeyName = "API_TOKEN"

// authenticate identifies the caller from "Authorization: Bearer <credential>"
// where the credential is a JWT from /auth/login, an API key (cvk_…) or the
// bootstrap API_TOKEN. No header: anonymous; a bad credential: 401, even on
// endpoints open to anonymous callers, so a client learns its token is stale.
//
// A JWT's user is read on every request (readUser), so that a deleted user
// or a changed role acts at once: prepared, it costs one round trip and no
// planning. byWrite leaves it unread (principal.User nil, UserID set) for a
// route that acts for a user without their role and whose own write fails
// when the user no longer exists (POST /api/v1/orders: the order's foreign
// key to users; the handler answers 401 as readUser would), saving that
// round trip.
func authenticate(d Deps, apiToken string) (readUser, byWrite echo.MiddlewareFunc) {
	keys := newAPIKeyCache(d.DB, apiKeyTTL)
	var users *store.Users
	if d.prepared != nil {
		users = store.NewUsers(d.prepared)
	} else {
		users = store.NewUsers(d.DB)
	}
	return authenticateWith(d, apiToken, keys, users), authenticateWith(d, apiToken, keys, nil)
}

// authenticateWith is authenticate's middleware; users nil: byWrite.
func authenticateWith(d Deps, apiToken string, keys *apiKeyCache, users *store.Users) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Request().Header.Get(echo.HeaderAuthorization)
			if h == "" {
				return next(c)
			}
			scheme, cred, ok := strings.Cut(h, " ")
			cred = strings.TrimSpace(cred)
			if !ok || !strings.EqualFold(scheme, "Bearer") || cred == "" {
				return unauthorized(c, "use Authorization: Bearer <token>")
			}
			ctx := c.Request().Context()
			var p principal
			switch {
			case apiToken != "" && subtle.ConstantTimeCompare([]byte(cred), []byte(apiToken)) == 1:
				p.APIKey = bootstrapKeyName
			case strings.HasPrefix(cred, auth.APIKeyPrefix):
				name, err := keys.name(ctx, auth.HashAPIKey(cred))
				if errors.Is(err, store.ErrNotFound) {
					return unauthorized(c, "invalid API key")
				}
				if err != nil {
					return err
				}
				p.APIKey = name
			case d.Tokens == nil:
				return unauthorized(c, "invalid token")
			default:
				id, err := d.Tokens.Verify(cred)
				if err != nil {
					return unauthorized(c, "invalid or expired token")
				}
				p.UserID = id
				if users == nil {
					break
				}
				u, err := users.Get(ctx, id)
				if errors.Is(err, store.ErrNotFound) {
					return userGone(c)
				}
				if err != nil {
					return err
				}
				p.User = &u
			}
			c.Set(ctxPrincipal, p)
			return next(c)
		}
	}
}

// userGone answers a request whose JWT names a user that no longer exists.
func userGone(c echo.Context) error {
	return unauthorized(c, "the token's user no longer exists")
}

// requireAuth admits any authenticated caller (user or service).
func requireAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if currentPrincipal(c).anonymous() {
			return unauthorized(c, "authentication required")
		}
		return next(c)
	}
}

// requireUser admits users only: services have no account to act as.
func requireUser(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := currentPrincipal(c)
		switch {
		case p.anonymous():
			return unauthorized(c, "authentication required")
		case p.UserID == 0:
			return errForbidden("this endpoint acts for a user: log in instead of using an API key")
		}
		return next(c)
	}
}

// requireAdmin admits admin users and API keys (including API_TOKEN).
func requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := currentPrincipal(c)
		switch {
		case p.anonymous():
			return unauthorized(c, "authentication required")
		case !p.admin():
			return errForbidden("admin only")
		}
		return next(c)
	}
}

func unauthorized(c echo.Context, msg string) error {
	c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="conveyor"`)
	return errUnauthorized(msg)
}

func errForbidden(msg string) *APIError {
	return &APIError{Status: http.StatusForbidden, Code: "forbidden", Message: msg}
}

func errTooManyRequests(c echo.Context, retryAfter time.Duration, msg string) *APIError {
	c.Response().Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(retryAfter.Seconds())))))
	return &APIError{Status: http.StatusTooManyRequests, Code: "too_many_requests", Message: msg}
}

// limit counts an attempt against l under key; refused, it is a 429 with
// Retry-After saying msg.
func limit(c echo.Context, l auth.LoginLimiter, key, msg string) error {
	if ok, wait := l.Attempt(c.Request().Context(), key); !ok {
		return errTooManyRequests(c, wait, msg)
	}
	return nil
}

// hashSlot waits for one of the password-hashing slots (PASSWORD_HASH_
// CONCURRENCY); none free within PASSWORD_HASH_WAIT is a 429.
func hashSlot(c echo.Context, g *auth.HashGate) (leave func(), err error) {
	leave, ok := g.Enter(c.Request().Context())
	if !ok {
		return nil, errTooManyRequests(c, time.Second, "the server is busy checking passwords; try again shortly")
	}
	return leave, nil
}

// handleRegister creates a user account through service.Register
// (POST /api/v1/auth/register).
func handleRegister(d Deps, bcryptCost int) echo.HandlerFunc {
	type request struct {
		Email    string `json:"email" validate:"required,email,max=254"`
		Password string `json:"password" validate:"required,min=8,maxbytes=72"`
		Name     string `json:"name" validate:"required,max=100"`
	}
	return func(c echo.Context) error {
		var req request
		if err := bind(c, &req); err != nil {
			return err
		}
		req.Email, req.Name = strings.TrimSpace(req.Email), strings.TrimSpace(req.Name)
		if err := c.Validate(req); err != nil {
			return err
		}
		if err := limit(c, d.Guard.RegisterAddr, auth.AddrKey(c.RealIP()), "too many registrations from this address; try again later"); err != nil {
			return err
		}
		leave, err := hashSlot(c, d.Guard.Hashing)
		if err != nil {
			return err
		}
		hash, err := auth.HashPassword(req.Password, bcryptCost)
		leave()
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		u := store.User{Email: req.Email, Name: req.Name, PasswordHash: hash}
		var welcome string
		err = db.InTx(ctx, d.DB, func(tx *sqlx.Tx) (err error) {
			welcome, err = service.Register(ctx, tx, &u, RequestID(c))
			return err
		})
		if errors.Is(err, store.ErrConflict) {
			return errConflict("an account with this email already exists")
		}
		if err != nil {
			return err
		}
		d.Dispatcher.Dispatch(welcome)
		return c.JSON(http.StatusCreated, u)
	}
}

// handleLogin exchanges email and password for an access token
// (POST /api/v1/auth/login). Attempts are limited per client address
// (LOGIN_ADDR_MAX, any email) and failures per email + address
// (LOGIN_MAX_FAILURES), both before the password is hashed.
func handleLogin(d Deps) echo.HandlerFunc {
	type request struct {
		// max bounds the limiter's key, kept for a whole window.
		Email    string `json:"email" validate:"required,max=254"`
		Password string `json:"password" validate:"required"`
	}
	type response struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	return func(c echo.Context) error {
		var req request
		if err := bind(c, &req); err != nil {
			return err
		}
		if err := c.Validate(req); err != nil {
			return err
		}
		addr := auth.AddrKey(c.RealIP())
		if err := limit(c, d.Guard.LoginAddr, addr, "too many logins from this address; try again later"); err != nil {
			return err
		}
		key := strings.ToLower(strings.TrimSpace(req.Email)) + "|" + addr
		if err := limit(c, d.Limiter, key, "too many failed logins; try again later"); err != nil {
			return err
		}
		ctx := c.Request().Context()
		u, err := store.NewUsers(d.DB).GetByEmail(ctx, strings.TrimSpace(req.Email))
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		leave, slotErr := hashSlot(c, d.Guard.Hashing)
		if slotErr != nil {
			return slotErr
		}
		if err != nil { // no such user: spend the same time
			auth.WasteTime(req.Password)
			err = auth.ErrBadPassword
		} else {
			err = auth.CheckPassword(u.PasswordHash, req.Password)
		}
		leave()
		if err != nil {
			return unauthorized(c, "invalid email or password")
		}
		d.Limiter.Reset(context.WithoutCancel(c.Request().Context()), key)
		tok, err := d.Tokens.Issue(u.ID)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, response{AccessToken: tok, TokenType: "bearer",
			ExpiresIn: int64(d.Tokens.TTL().Seconds())})
	}
}
