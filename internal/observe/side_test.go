package observe_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/conveyor-run/conveyor/internal/observe"
)

func TestSideServerServesHealthMetricsAndProfiler(t *testing.T) {
	t.Parallel()
	side, err := observe.ListenSide("127.0.0.1:0", observe.NewRegistry(), func(context.Context) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = side.Serve() }()
	t.Cleanup(func() { _ = side.Shutdown(context.Background()) })

	for path, want := range map[string]string{
		"/healthz":                       `"ok"`,
		"/metrics":                       "go_goroutines",
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/goroutine?debug=1": "goroutine profile",
		"/debug/pprof/cmdline":           "",
	} {
		resp, err := http.Get("http://" + side.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s = %d, body %.200q; want 200 containing %q", path, resp.StatusCode, b, want)
		}
	}
}
