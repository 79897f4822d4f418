// Package httpapi is Conveyor's HTTP API, built on Echo v4: routes (all in
// routes.go), handlers, middleware and the single error handler that turns
// every failure into {"error":{"code","message","fields"}}.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/netip"
	"regexp"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/conveyor-run/conveyor/internal/auth"
	"github.com/conveyor-run/conveyor/internal/config"
	"github.com/conveyor-run/conveyor/internal/observe"
	"github.com/conveyor-run/conveyor/internal/queue"
	"github.com/conveyor-run/conveyor/internal/schedule"
	"github.com/conveyor-run/conveyor/internal/service"
	"github.com/conveyor-run/conveyor/internal/store"
)

// Options configure the server.
type Options struct {
	APIToken  string // bearer token for the task endpoints
	BodyLimit int64  // bytes
	// CancelWait bounds how long DELETE /tasks/{id} waits for an active
	// task's handler to stop.
	CancelWait time.Duration
	// Product API (users, posts, orders).
	BcryptCost         int           // 0: bcrypt.DefaultCost (tests use bcrypt.MinCost)
	CORSAllowedOrigins []string      // empty: no cross-origin access
	IdempotencyTTL     time.Duration // 0: 24 h
	// MonitorUsers may log in to the dashboard at /monitoring/; none: 404.
	MonitorUsers []config.MonitorUser
	// TaskIDSecret keys the task IDs derived from Idempotency-Keys (nil: a
	// random one per process).
	TaskIDSecret []byte
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client (TRUSTED_PROXIES); none: the TCP peer is the client.
	TrustedProxies []netip.Prefix
}

// Deps are the server's collaborators, built once in cmd/api.
type Deps struct {
	Log   *slog.Logger
	DB    *sqlx.DB
	Queue *queue.Client
	// Dispatcher sends the outbox rows a request wrote right after its
	// commit (nil: the relay's poll sends them).
	Dispatcher *queue.Dispatcher
	// Tokens issues and verifies access tokens; Limiter limits failed
	// logins (nil: 5 per 15 minutes).
	Tokens  *auth.Tokens
	Limiter auth.LoginLimiter
	// Verifier checks the links that prove email addresses (nil: one with a
	// random key, so no link verifies).
	Verifier *auth.EmailVerifier
	// Guard limits the anonymous endpoints that hash passwords per client
	// address and caps concurrent hashing (nil: the defaults, in-process).
	Guard *auth.Guard
	// Metrics is the registry /metrics serves; the server adds its request
	// metrics to it. Nil: a registry of the server's own.
	Metrics *prometheus.Registry
	// Monitor is the Asynqmon dashboard (nil: none).
	Monitor *Monitor
	// Schedules serves /api/v1/schedules (database and file schedules,
	// the scheduler leader).
	Schedules *schedule.Catalog

	workflows *observe.WorkflowMetrics // made by NewServer on Metrics
	orderIDs  *service.OrderIDs        // made by NewServer on DB
	prepared  *store.Prepared          // made by NewServer on DB: POST /orders' statement
}

// NewServer builds the Echo instance with its middleware and routes.
func NewServer(opts Options, d Deps) http.Handler {
	if opts.CancelWait == 0 {
		opts.CancelWait = 5 * time.Second
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(d.Log)
	e.IPExtractor = clientIPExtractor(opts.TrustedProxies)
	e.Validator = structValidator{newValidator()}
	if d.Metrics == nil {
		d.Metrics = prometheus.NewRegistry()
	}
	httpMetrics := observe.NewHTTPMetrics(d.Metrics)
	d.workflows = observe.NewWorkflowMetrics(d.Metrics)
	if d.DB != nil {
		d.orderIDs = service.NewOrderIDs(d.DB, orderIDBlock)
		d.prepared = store.NewPrepared(d.DB)
	}
	e.Use(requestID, observeRequests(httpMetrics), accessLog(d.Log), recoverPanics, bodyLimit(opts.BodyLimit))
	e.Use(securityHeaders(), cors(opts.CORSAllowedOrigins), textParams)
	if opts.IdempotencyTTL == 0 {
		opts.IdempotencyTTL = 24 * time.Hour
	}
	if d.Limiter == nil {
		d.Limiter = auth.NewLimiter(5, 15*time.Minute)
	}
	if opts.TaskIDSecret == nil {
		opts.TaskIDSecret = auth.RandomSecret(32)
	}
	if d.Verifier == nil {
		d.Verifier = auth.NewEmailVerifier(auth.RandomSecret(32))
	}
	if d.Guard == nil {
		d.Guard = auth.NewGuard(nil, config.DefaultAbuse(), nil)
	}
	addRoutes(e, opts, d)
	return e
}

const ctxRequestID = "request_id"

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._\-]{1,128}$`)

// requestID takes a well-formed incoming X-Request-ID or makes one, sets it
// on the response and keeps it for logs and for the tasks the request enqueues.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		rid := c.Request().Header.Get(echo.HeaderXRequestID)
		if !validRequestID.MatchString(rid) {
			var b [12]byte
			_, _ = rand.Read(b[:])
			rid = hex.EncodeToString(b[:])
		}
		c.Set(ctxRequestID, rid)
		c.Response().Header().Set(echo.HeaderXRequestID, rid)
		return next(c)
	}
}

// RequestID returns the request's ID.
func RequestID(c echo.Context) string {
	s, _ := c.Get(ctxRequestID).(string)
	return s
}

func accessLog(log *slog.Logger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err) // writes the response so the status below is final
			}
			status := c.Response().Status
			lvl := slog.LevelInfo
			if status >= 500 {
				lvl = slog.LevelError
			}
			ctx := c.Request().Context()
			if !log.Enabled(ctx, lvl) {
				return nil
			}
			// Built here rather than by Logger.LogAttrs, which also walks
			// the call stack for a source position no handler prints.
			end := time.Now()
			r := slog.NewRecord(end, lvl, "http request", 0)
			r.AddAttrs(
				slog.String("request_id", RequestID(c)),
				slog.String("method", c.Request().Method),
				slog.String("route", c.Path()),
				slog.String("path", c.Request().URL.Path),
				slog.Int("status", status),
				slog.Duration("duration", end.Sub(start)),
				slog.String("remote_ip", c.RealIP()),
			)
			_ = log.Handler().Handle(ctx, r)
			return nil
		}
	}
}

func recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				err = errInternal("panic", p)
			}
		}()
		return next(c)
	}
}

// bodyLimit refuses bodies over limit bytes with 413, whether or not the
// client declared a Content-Length.
func bodyLimit(limit int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.ContentLength > limit {
				return errTooLarge(limit)
			}
			req.Body = http.MaxBytesReader(c.Response(), req.Body, limit)
			return next(c)
		}
	}
}

// healthCheck pings a dependency within a short timeout.
func healthCheck(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return f(ctx)
}
