package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// The lean client must see what a caller would: every status, every body
// (whatever its framing), and a connection the server closes.
func TestLeanClientReadsEveryAnswer(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Authorization") != "Bearer tok" || string(body) != `{"a":1}` || r.URL.Path != "/p" {
			http.Error(w, "bad request "+string(body), http.StatusBadRequest)
			return
		}
		switch n % 4 {
		case 1: // Content-Length
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"id":"x","state":"pending"}`)
		case 2: // chunked: flushed before the end
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"id":"y",`)
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, `"state":"pending"}`)
		case 3: // an error status
			http.Error(w, `{"error":{"code":"boom"}}`, http.StatusServiceUnavailable)
		case 0: // the server ends the connection after this answer
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"id":"z","state":"pending"}`)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	c := newLeanClient(host, 1)
	defer c.Close()
	req := newLeanRequest(host, "/p", "tok", []byte(`{"a":1}`))

	type answer struct {
		status int
		body   string
	}
	var got []answer
	for range 8 {
		err := c.Do(context.Background(), req, func(status int, body []byte) error {
			got = append(got, answer{status, string(body)})
			return nil
		})
		if err != nil {
			t.Fatalf("call %d: %v", len(got)+1, err)
		}
	}
	want := []answer{
		{202, `{"id":"x","state":"pending"}`},
		{202, `{"id":"y","state":"pending"}`},
		{503, "{\"error\":{\"code\":\"boom\"}}\n"},
		{202, `{"id":"z","state":"pending"}`},
	}
	want = append(want, want...)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("answer %d = %+v, want %+v", i+1, got[i], want[i])
		}
	}
}

func TestLeanClientFailsOnADeadServer(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	host := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	c := newLeanClient(host, 1)
	defer c.Close()
	err := c.Do(context.Background(), newLeanRequest(host, "/", "", nil), func(int, []byte) error { return nil })
	if err == nil {
		t.Fatal("a call to a closed server succeeded")
	}
}

func TestCheckEnqueued(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		body string
		per  int
		ok   bool
	}{
		{`{"id":"a","type":"system:ping","queue":"default","state":"pending"}`, 1, true},
		{`{"id":"","state":"pending"}`, 1, false},
		{`{"error":{"code":"validation"}}`, 1, false},
		{`not json`, 1, false},
		{`{"tasks":[{"id":"a","state":"pending"},{"id":"b","state":"pending"}]}`, 2, true},
		{`{"tasks":[{"id":"a","state":"pending"},{"id":"b","state":"conflict","error":{}}]}`, 2, false},
		{`{"tasks":[{"id":"a","state":"pending"}]}`, 2, false},
	} {
		err := checkEnqueued([]byte(tc.body), tc.per)
		if (err == nil) != tc.ok {
			t.Errorf("checkEnqueued(%s, %d) = %v, want ok %v", tc.body, tc.per, err, tc.ok)
		}
	}
	if err := checkEnqueued(nil, 1); err == nil {
		t.Error("an empty body passed")
	}
}

func TestLeadingID(t *testing.T) {
	for _, tc := range []struct {
		body string
		want int64
	}{
		{`{"id":123,"user_id":7}`, 123},
		{`{"id":9}`, 9},
		{`{"id":1234567890123,"status":"pending"}`, 1234567890123},
		{`{"user_id":7,"id":123}`, 0}, // not leading: decoded in full instead
		{`{"id":"12"}`, 0},
		{`{"id":,}`, 0},
		{`{"id":-3,}`, 0},
		{`{"id":12`, 0},
		{`{"id":1234567890123456789012}`, 0},
		{``, 0},
	} {
		if got := leadingID([]byte(tc.body)); got != tc.want {
			t.Errorf("leadingID(%s) = %d, want %d", tc.body, got, tc.want)
		}
	}
}
