package httpapi

import (
	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/observe"
)

// addRoutes lists the whole API.
func addRoutes(e *echo.Echo, opts Options, d Deps) {
	e.GET("/healthz", handleHealthz())
	e.GET("/readyz", handleReadyz(d))
	e.GET("/metrics", echo.WrapHandler(observe.MetricsHandler(d.Metrics)))
	addMonitoring(e, opts.MonitorUsers, d.Monitor) // /monitoring/: Asynqmon behind basic auth

	// Every /api/v1 request is authenticated when it carries credentials
	// (JWT, API key or API_TOKEN); each route then says who may call it.
	api := e.Group("/api/v1", authenticate(d, opts.APIToken))
	api.GET("/openapi.json", handleOpenAPI())
	api.POST("/auth/register", handleRegister(d, opts.BcryptCost))
	api.POST("/auth/login", handleLogin(d))
	api.GET("/users/me", handleUserMe(d.DB), requireUser)
	api.GET("/users", handleUserList(d.DB), requireAdmin)
	api.GET("/users/:id", handleUserGet(d.DB), requireAuth)
	api.GET("/posts", handlePostList(d.DB))
	api.POST("/posts", handlePostCreate(d.DB), requireUser)
	api.GET("/posts/:id", handlePostGet(d.DB))
	api.PATCH("/posts/:id", handlePostUpdate(d.DB), requireUser)
	api.DELETE("/posts/:id", handlePostDelete(d.DB), requireUser)
	api.POST("/posts/:id/publish", handlePostPublish(d.DB), requireUser)
	api.POST("/orders", handleOrderCreate(d.DB, opts.IdempotencyTTL), requireUser)
	api.GET("/orders", handleOrderList(d.DB), requireUser)
	api.GET("/orders/:id", handleOrderGet(d.DB), requireUser)

	// Admin endpoints: an admin user's JWT, an API key or API_TOKEN. requireAdmin
	// goes on each route, not on a group: a group's middleware also guards the
	// group's catch-all, which would answer 401/403 instead of 404 or 405 for
	// every unknown path or method under /api/v1.
	api.POST("/tasks", handleTaskCreate(d.Queue), requireAdmin, idempotent(d.DB, opts.IdempotencyTTL))
	api.GET("/tasks/:id", handleTaskGet(d.Queue), requireAdmin)
	api.DELETE("/tasks/:id", handleTaskCancel(d.Queue, opts.CancelWait), requireAdmin)
	api.POST("/tasks/:id/run", handleTaskRun(d.Queue), requireAdmin)
	api.GET("/queues", handleQueueList(d.Queue, d.DB), requireAdmin)
	api.GET("/schedules", handleScheduleList(d.Schedules), requireAdmin)
	api.POST("/schedules", handleScheduleCreate(d.Schedules), requireAdmin)
	api.GET("/schedules/:name", handleScheduleGet(d.Schedules), requireAdmin)
	api.PATCH("/schedules/:name", handleSchedulePatch(d.Schedules), requireAdmin)
	api.DELETE("/schedules/:name", handleScheduleDelete(d.Schedules), requireAdmin)
	api.POST("/schedules/:name/fire", handleScheduleFire(d.Schedules), requireAdmin)
}
