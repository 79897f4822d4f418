package httpapi

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

// X-Forwarded-For counts only when the TCP peer is a trusted proxy, and a
// client cannot choose its address by writing into the header.
func TestClientIPExtractor(t *testing.T) {
	t.Parallel()
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.10/32")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		peer    string
		xff     string
		want    string
	}{
		{"no proxies trusted: the peer, whatever the header", nil, "203.0.113.7:1", "1.2.3.4", "203.0.113.7"},
		{"loopback is not trusted by default", nil, "127.0.0.1:1", "1.2.3.4", "127.0.0.1"},
		{"private peer not listed", proxies, "172.16.0.1:1", "1.2.3.4", "172.16.0.1"},
		{"trusted proxy: the client it names", proxies, "10.1.2.3:1", "198.51.100.9", "198.51.100.9"},
		{"spoofed entry before the real client", proxies, "10.1.2.3:1", "6.6.6.6, 198.51.100.9", "198.51.100.9"},
		{"a chain of trusted proxies", proxies, "10.1.2.3:1", "198.51.100.9, 192.0.2.10, 10.9.9.9", "198.51.100.9"},
		{"garbage in the header: the peer", proxies, "10.1.2.3:1", "not-an-ip", "10.1.2.3"},
		{"no header behind a proxy: the proxy", proxies, "10.1.2.3:1", "", "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tt.peer
			if tt.xff != "" {
				req.Header.Set("X-Forwarded-For", tt.xff)
			}
			if got := clientIPExtractor(tt.trusted)(req); got != tt.want {
				t.Fatalf("client IP = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDashboardErrorMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text    string
		redisUp bool
		status  int
	}{
		{"asynq: queue not found\n", true, 404},
		{`NOT_FOUND: queue "x" does not exist`, true, 404},
		{"queue is not empty", true, 409},
		{"task is already running", true, 409},
		{"something odd", true, 400},
		{"dial tcp 127.0.0.1:6379: connect: connection refused", false, 503},
	}
	for _, tt := range tests {
		ae := dashboardError(tt.text, tt.redisUp)
		if ae.Status != tt.status || ae.Message == "" {
			t.Errorf("%q (redis up %v) = %d %q, want %d", tt.text, tt.redisUp, ae.Status, ae.Message, tt.status)
		}
		if !tt.redisUp && ae.Message != "the dashboard cannot reach Redis" {
			t.Errorf("an outage's detail reaches the client: %q", ae.Message)
		}
	}
}
