package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/observe"
)

// addRoutes lists the whole API.
func addRoutes(e *echo.Echo, opts Options, d Deps) {
	e.GET("/healthz", handleHealthz())
	e.GET("/readyz", handleReadyz(d))
	e.GET("/metrics", echo.WrapHandler(observe.MetricsHandler(d.Metrics)))
	addMonitoring(e, opts.MonitorUsers, d.Monitor, d.Guard) // /monitoring/: Asynqmon behind basic auth

	// Every /api/v1 route authenticates the request when it carries
	// credentials (JWT, API key or API_TOKEN), then says who may call it.
	// The middleware goes on each route, not on the group: a group's
	// middleware also guards the group's catch-all, which would answer
	// 401/403 instead of 404 or 405 for unknown paths and methods.
	authn, authnByWrite := authenticate(d, opts.APIToken)
	api := e.Group("/api/v1")
	route := func(method, path string, h echo.HandlerFunc, mw ...echo.MiddlewareFunc) {
		api.Add(method, path, h, append([]echo.MiddlewareFunc{authn}, mw...)...)
	}
	route(http.MethodGet, "/openapi.json", handleOpenAPI())
	route(http.MethodPost, "/auth/register", handleRegister(d, opts.BcryptCost))
	route(http.MethodPost, "/auth/login", handleLogin(d))
	route(http.MethodGet, "/auth/verify-email", handleVerifyEmail(d.DB, d.Verifier))
	route(http.MethodGet, "/users/me", handleUserMe(d.DB), requireUser)
	route(http.MethodGet, "/users", handleUserList(d.DB), requireAdmin)
	route(http.MethodGet, "/users/:id", handleUserGet(d.DB), requireAuth)
	route(http.MethodGet, "/posts", handlePostList(d.DB))
	route(http.MethodPost, "/posts", handlePostCreate(d.DB), requireUser)
	route(http.MethodGet, "/posts/:id", handlePostGet(d.DB))
	route(http.MethodPatch, "/posts/:id", handlePostUpdate(d.DB), requireUser)
	route(http.MethodDelete, "/posts/:id", handlePostDelete(d.DB), requireUser)
	route(http.MethodPost, "/posts/:id/publish", handlePostPublish(d.DB), requireUser)
	// The order's insert checks its user itself (authenticate's byWrite).
	api.Add(http.MethodPost, "/orders", handleOrderCreate(d.DB, d.prepared, d.Dispatcher, d.orderIDs, opts.IdempotencyTTL),
		authnByWrite, requireUser)
	route(http.MethodGet, "/orders", handleOrderList(d.DB), requireUser)
	route(http.MethodGet, "/orders/:id", handleOrderGet(d.DB), requireUser)

	// Admin endpoints: an admin user's JWT, an API key or API_TOKEN.
	route(http.MethodPost, "/tasks", handleTaskCreate(d.Queue), requireAdmin, idempotent(d.DB, opts.IdempotencyTTL, opts.TaskIDSecret))
	route(http.MethodPost, "/tasks/batch", handleTaskBatch(d.Queue), requireAdmin, idempotent(d.DB, opts.IdempotencyTTL, opts.TaskIDSecret))
	route(http.MethodGet, "/tasks/:id", handleTaskGet(d.Queue, d.DB), requireAdmin)
	route(http.MethodDelete, "/tasks/:id", handleTaskCancel(d.Queue, opts.CancelWait), requireAdmin)
	route(http.MethodPost, "/tasks/:id/run", handleTaskRun(d.Queue), requireAdmin)
	route(http.MethodGet, "/queues", handleQueueList(d.Queue, d.DB), requireAdmin)
	route(http.MethodPost, "/workflows", handleWorkflowCreate(d.DB, d.Queue, d.Dispatcher, d.workflows, opts.IdempotencyTTL), requireAdmin)
	route(http.MethodGet, "/workflows", handleWorkflowList(d.DB), requireAdmin)
	route(http.MethodGet, "/workflows/:id", handleWorkflowGet(d.DB), requireAdmin)
	route(http.MethodDelete, "/workflows/:id", handleWorkflowCancel(d.DB, d.Queue, d.workflows, d.Log, opts.CancelWait), requireAdmin)
	route(http.MethodGet, "/schedules", handleScheduleList(d.Schedules), requireAdmin)
	route(http.MethodPost, "/schedules", handleScheduleCreate(d.Schedules), requireAdmin)
	route(http.MethodGet, "/schedules/:name", handleScheduleGet(d.Schedules), requireAdmin)
	route(http.MethodPatch, "/schedules/:name", handleSchedulePatch(d.Schedules), requireAdmin)
	route(http.MethodDelete, "/schedules/:name", handleScheduleDelete(d.Schedules), requireAdmin)
	route(http.MethodPost, "/schedules/:name/fire", handleScheduleFire(d.Schedules), requireAdmin)
	reg, lims := taskTypeDeps(d.Queue)
	route(http.MethodGet, "/task-types", handleTaskTypeList(reg, lims), requireAdmin)
	route(http.MethodGet, "/task-types/:type/limits", handleTaskLimitsGet(reg, lims), requireAdmin)
	route(http.MethodPut, "/task-types/:type/limits", handleTaskLimitsPut(reg, lims), requireAdmin)
	route(http.MethodDelete, "/task-types/:type/limits", handleTaskLimitsDelete(reg, lims), requireAdmin)
}
