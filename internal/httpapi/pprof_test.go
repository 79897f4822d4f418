package httpapi_test

import (
	"net/http"
	"testing"
)

// The profiler lives on the side port (observe.ListenSide), never on the
// public listener.
func TestNoProfilerOnThePublicListener(t *testing.T) {
	t.Parallel()
	b := setupAPI(t, "")
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/profile", "/api/v1/debug/pprof/"} {
		if rec := b.do("GET", path, "", nil); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, rec.Code)
		}
	}
}
