package httpapi

import (
	"context"
	"crypto/sha256"
	"net/http"
	"sync"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/config"
)

// MonitorPath is where the Asynqmon dashboard is mounted.
const MonitorPath = "/monitoring"

// Monitor is the Asynqmon dashboard in its two modes, built in cmd/api:
// read-only users get a UI without write actions.
type Monitor struct {
	ReadWrite http.Handler
	ReadOnly  http.Handler
	// Ping checks Redis when the dashboard fails, to tell an outage (503)
	// from a request that cannot be served (4xx). Nil: Redis is assumed up.
	Ping func(context.Context) error
}

const ctxMonitorUser = "monitor_user"

// addMonitoring mounts the dashboard behind HTTP basic auth. Without users
// it mounts nothing, so /monitoring/ is a 404: the dashboard is never open.
func addMonitoring(e *echo.Echo, users []config.MonitorUser, m *Monitor, guard *auth.Guard) {
	if len(users) == 0 || m == nil {
		return
	}
	g := e.Group(MonitorPath, sameOriginWrites(), requireMonitorUser(users, guard))
	g.GET("", func(c echo.Context) error {
		return c.Redirect(http.StatusMovedPermanently, MonitorPath+"/")
	})
	g.Any("/*", handleMonitoring(m))
}

// handleMonitoring serves the dashboard. Read-only users may only read: any
// other method is refused here, whatever the UI shows.
func handleMonitoring(m *Monitor) echo.HandlerFunc {
	rw, ro := dashboardErrors(m.ReadWrite, m.Ping), dashboardErrors(m.ReadOnly, m.Ping)
	return func(c echo.Context) error {
		u, _ := c.Get(ctxMonitorUser).(config.MonitorUser)
		if !u.ReadOnly {
			return rw(c)
		}
		switch c.Request().Method {
		case http.MethodGet, http.MethodHead:
			return ro(c)
		}
		return &APIError{Status: http.StatusForbidden, Code: "forbidden",
			Message: "user " + u.Name + " has read-only access to the dashboard"}
	}
}

// sameOriginWrites refuses state-changing requests that a browser made for
// another site. Basic credentials are ambient: once a user has logged in,
// the browser sends them with any request to the dashboard, including a
// form posted by a page elsewhere (CSRF). Clients that are not browsers send
// neither Sec-Fetch-Site nor Origin and are let through.
func sameOriginWrites() echo.MiddlewareFunc {
	cop := http.NewCrossOriginProtection()
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := cop.Check(c.Request()); err != nil {
				return errForbidden("cross-origin requests may not change the dashboard's state")
			}
			return next(c)
		}
	}
}

// requireMonitorUser checks HTTP basic credentials against MONITOR_USERS
// and stores the user for handleMonitoring.
//
// bcrypt is slow by design and the dashboard polls several endpoints every
// few seconds, so a successful check is remembered (as a SHA-256 of user,
// password and hash, never the password itself) for the process's life.
// Failures are never cached: each one costs a bcrypt comparison, which is
// what slows guessing down. Unknown names are compared against a dummy hash
// as costly as the dearest user's, so that response times do not reveal
// which names exist.
// dummyHash is the hash unknown names are checked against: a bcrypt hash
// of the highest cost among users, so checking it takes as long as checking
// the slowest real one.
func dummyHash(users []config.MonitorUser) []byte {
	cost := bcrypt.MinCost
	for _, u := range users {
		if c, err := bcrypt.Cost([]byte(u.Hash)); err == nil {
			cost = max(cost, c)
		}
	}
	dummy, _ := bcrypt.GenerateFromPassword([]byte("conveyor-dummy-password"), cost)
	return dummy
}

func requireMonitorUser(users []config.MonitorUser, guard *auth.Guard) echo.MiddlewareFunc {
	byName := make(map[string]config.MonitorUser, len(users))
	for _, u := range users {
		byName[u.Name] = u
	}
	dummy := dummyHash(users)
	var mu sync.Mutex
	verified := map[[sha256.Size]byte]bool{}
	const maxVerified = 1024

	// cached reports whether name and password passed a full check before.
	cached := func(name, password string) (config.MonitorUser, [sha256.Size]byte, bool) {
		u, known := byName[name]
		hash := u.Hash
		if !known {
			hash = string(dummy)
		}
		key := sha256.Sum256([]byte(name + "\x00" + password + "\x00" + hash))
		mu.Lock()
		ok := verified[key]
		mu.Unlock()
		return u, key, ok && known
	}
	// check is the full bcrypt comparison; a success is remembered.
	check := func(name, password string, key [sha256.Size]byte) (config.MonitorUser, bool) {
		u, known := byName[name]
		hash := []byte(u.Hash)
		if !known {
			hash = dummy
		}
		if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil || !known {
			return config.MonitorUser{}, false
		}
		mu.Lock()
		if len(verified) >= maxVerified {
			clear(verified)
		}
		verified[key] = true
		mu.Unlock()
		return u, true
	}

	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Basic realm="Conveyor monitoring", charset="UTF-8"`)
			name, password, ok := c.Request().BasicAuth()
			if !ok {
				return errUnauthorized("log in with a MONITOR_USERS name and password")
			}
			u, key, good := cached(name, password)
			if !good {
				// A check that costs a bcrypt comparison: limited per address
				// and, for failures, per user name + address, before hashing.
				addr := auth.AddrKey(c.RealIP())
				if err := limit(c, guard.MonitorAddr, addr, "too many dashboard logins from this address; try again later"); err != nil {
					return err
				}
				userKey := name + "|" + addr
				if err := limit(c, guard.MonitorUser, userKey, "too many failed dashboard logins; try again later"); err != nil {
					return err
				}
				leave, err := hashSlot(c, guard.Hashing)
				if err != nil {
					return err
				}
				u, good = check(name, password, key)
				leave()
				if good {
					guard.MonitorUser.Reset(context.WithoutCancel(c.Request().Context()), userKey)
				}
			}
			if !good {
				return errUnauthorized("wrong user name or password")
			}
			c.Response().Header().Del(echo.HeaderWWWAuthenticate)
			c.Set(ctxMonitorUser, u)
			return next(c)
		}
	}
}
