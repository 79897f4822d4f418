package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/bcrypt"

	"github.com/conveyor-run/conveyor/internal/config"
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
	}, recoverPanics, idempotent(d, time.Hour, []byte("test-secret")))
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

// Unknown dashboard users are checked against a dummy hash as costly as the
// dearest real one, so a wrong password takes as long for a name that does
// not exist as for one that does (checked by cost, not by the clock).
func TestDummyHashCostsAsMuchAsTheDearestUser(t *testing.T) {
	t.Parallel()
	hash := func(cost int) string {
		h, err := bcrypt.GenerateFromPassword([]byte("pw"), cost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	cases := []struct {
		users []config.MonitorUser
		want  int
	}{
		{nil, bcrypt.MinCost},
		{[]config.MonitorUser{{Name: "a", Hash: hash(bcrypt.MinCost)}}, bcrypt.MinCost},
		{[]config.MonitorUser{{Name: "a", Hash: hash(bcrypt.MinCost)}, {Name: "b", Hash: hash(bcrypt.MinCost + 3)}}, bcrypt.MinCost + 3},
		{[]config.MonitorUser{{Name: "a", Hash: "not-a-hash"}, {Name: "b", Hash: hash(bcrypt.MinCost + 1)}}, bcrypt.MinCost + 1},
	}
	for i, tc := range cases {
		if got, err := bcrypt.Cost(dummyHash(tc.users)); err != nil || got != tc.want {
			t.Errorf("case %d: dummy hash cost %d (%v), want %d", i, got, err, tc.want)
		}
	}
}
