package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"status":"ok"}`))
		case "/slow":
			time.Sleep(500 * time.Millisecond)
		default:
			http.Error(w, `{"status":"unhealthy","error":"redis: down"}`, http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)

	tests := []struct {
		name, url, wantErr string
	}{
		{"2xx", srv.URL + "/ok", ""},
		{"503 names the body", srv.URL + "/readyz", "redis: down"},
		{"timeout", srv.URL + "/slow", "deadline exceeded"},
		{"refused", "http://127.0.0.1:1/healthz", "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run([]string{"healthcheck", tt.url}, 200*time.Millisecond)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("run: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("run: got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
	if err := run([]string{"healthcheck"}, time.Second); err == nil {
		t.Fatal("run without a URL: no error")
	}
}
