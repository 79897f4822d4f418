package queue

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/hibiken/asynqmon"
)

// Monitor is the Asynqmon dashboard: an http.Handler serving its UI and its
// JSON API under a root path. Close releases its Redis connections.
type Monitor interface {
	http.Handler
	io.Closer
}

// MonitorOptions configure NewMonitor.
type MonitorOptions struct {
	RootPath      string // where the handler is mounted, e.g. "/monitoring"
	PrometheusURL string // optional: Asynqmon's charts query this Prometheus
	// ReadOnly hides the UI's write actions and makes its API refuse them.
	// Callers still check the method themselves: this is the UI's guard.
	ReadOnly bool
}

// NewMonitor builds the Asynqmon dashboard for the Redis at redisURL
// (REDIS_URL); see NewMonitorFor.
func NewMonitor(redisURL string, o MonitorOptions) (Monitor, error) {
	return NewMonitorFor(RedisConfig{URL: redisURL}, o)
}

// NewMonitorFor builds the Asynqmon dashboard for the Redis rc names (on a
// cluster its Redis page shows the cluster's nodes). Payloads and results
// render as indented JSON.
func NewMonitorFor(rc RedisConfig, o MonitorOptions) (Monitor, error) {
	opt, err := rc.ConnOpt()
	if err != nil {
		return nil, err
	}
	h := asynqmon.New(asynqmon.Options{
		RootPath:          o.RootPath,
		RedisConnOpt:      opt,
		ReadOnly:          o.ReadOnly,
		PrometheusAddress: o.PrometheusURL,
		PayloadFormatter:  asynqmon.PayloadFormatterFunc(func(_ string, b []byte) string { return PrettyJSON(b) }),
		ResultFormatter:   asynqmon.ResultFormatterFunc(func(_ string, b []byte) string { return PrettyJSON(b) }),
	})
	return h, nil
}

// PrettyJSON indents valid JSON and returns anything else as text (quoted
// when it is not printable, so binary payloads cannot garble the page).
func PrettyJSON(b []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err == nil {
		return out.String()
	}
	if s := string(b); isPrintable(s) {
		return s
	}
	return fmt.Sprintf("%q", b)
}

func isPrintable(s string) bool {
	for _, r := range s {
		if r == '\uFFFD' || (r < 0x20 && r != '\n' && r != '\r' && r != '\t') {
			return false
		}
	}
	return true
}
