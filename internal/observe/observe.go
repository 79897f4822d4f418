// Package observe holds what every process shares for being watched: the
// slog logger, the Prometheus registry and the side HTTP server that serves
// /healthz, /metrics and /debug/pprof/ for the worker, the scheduler and (when
// its METRICS_ADDR is set) the api.
package observe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewLogger builds the process logger. format is "text" or "json"; level is
// one of debug, info, warn, error (config has validated both).
func NewLogger(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors. Each process builds one and hands it to whatever registers
// metrics, so tests can run several processes in one binary without clashes.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// MetricsHandler serves reg in the Prometheus text format.
func MetricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// HealthFunc reports whether the process is healthy; a non-nil error makes
// /healthz answer 503 with the error's text.
type HealthFunc func(ctx context.Context) error

// SideServer is the small HTTP server of the worker and the scheduler (and
// of the api when it has a METRICS_ADDR). Besides health and metrics it
// serves Go's profiler at /debug/pprof/: a side port belongs on a private
// network (loopback by default), never on the public listener.
type SideServer struct {
	srv *http.Server
	ln  net.Listener
}

// ListenSide binds addr at once (so a bad or busy address fails at start) and
// prepares /healthz, /metrics and /debug/pprof/.
func ListenSide(addr string, reg *prometheus.Registry, health HealthFunc) (*SideServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("METRICS_ADDR: listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", MetricsHandler(reg))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if err := health(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "{\"status\":\"unhealthy\",\"error\":%q}\n", err.Error())
			return
		}
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	// Go's profiler (go tool pprof http://ADDR/debug/pprof/profile?seconds=30).
	// Registered by hand: net/http/pprof's init only fills http.DefaultServeMux.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return &SideServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln}, nil
}

// Addr is the bound address (useful when addr had port 0).
func (s *SideServer) Addr() string { return s.ln.Addr().String() }

// Serve runs until Shutdown; it returns nil after a clean shutdown.
func (s *SideServer) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the server, waiting for open requests up to ctx.
func (s *SideServer) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
