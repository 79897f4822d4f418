package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/conveyor-run/conveyor/internal/testenv"
)

// A handler that panics frees its Idempotency-Key: the retry runs again (and
// here panics again, 500) instead of getting 409 "in progress" for 24 h.
func TestIdempotentKeyFreedWhenTheHandlerPanics(t *testing.T) {
	t.Parallel()
	d, _ := testenv.DB(t)
	e := echo.New()
	e.HTTPErrorHandler = errorHandler(testenv.Logger(t))
	calls := 0
	e.POST("/boom", func(echo.Context) error {
		calls++
		panic("handler bug")
	}, recoverPanics, idempotent(d, time.Hour))
	for i := range 2 {
		req := httptest.NewRequest(http.MethodPost, "/boom", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(HeaderIdempotencyKey, "k-1")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != http.StatusInternalServerError {
			t.Fatalf("attempt %d: %d %s, want 500 (the key must not be left in progress)", i+1, rec.Code, rec.Body)
		}
	}
	if calls != 2 {
		t.Fatalf("handler ran %d times, want 2", calls)
	}
}
