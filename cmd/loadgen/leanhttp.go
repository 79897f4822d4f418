package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// The enqueue scenario's HTTP client. Go's net/http client costs about 50
// µs of CPU per request on the bench machine (a goroutine pair per
// connection, header maps, a context and a body reader per call), more than
// the asynq client and Redis together spend per task; since the load
// generator shares the machine's cores with the api and Redis, that cost was
// measured against the api. leanClient does what wrk does: each connection
// writes a request prepared once and reads the answer with a small HTTP/1.1
// parser on one buffered reader. It still reads every response in full
// (status line, headers, a Content-Length or chunked body) and hands the
// status and body to the scenario, which counts anything unexpected as an
// error. -http-client net/http measures with the Go client instead.

// leanRequest is one request, written once and sent as is.
type leanRequest []byte

// newLeanRequest prepares a POST of a JSON body with a bearer token.
func newLeanRequest(host, path, token string, body []byte) leanRequest {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n", path, host)
	if token != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", token)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	return b.Bytes()
}

// leanClient holds up to conns keep-alive connections to addr; each call
// takes one, so conns calls run at once. The connection used last is used
// next: a client allowed many connections (an open loop's bound on calls in
// flight) opens only as many as calls really overlap.
type leanClient struct {
	addr  string
	slots chan struct{} // one per call in flight

	mu   sync.Mutex
	idle []*leanConn // most recently used last
}

func newLeanClient(addr string, conns int) *leanClient {
	return &leanClient{addr: addr, slots: make(chan struct{}, conns)}
}

// Close closes every connection (call it when no call is running).
func (c *leanClient) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, lc := range c.idle {
		lc.close()
	}
	c.idle = nil
}

// Do sends req and returns the answer's status and body; the body is valid
// until the next call on the same connection, so check it inside check,
// which may turn an unexpected answer into an error.
func (c *leanClient) Do(ctx context.Context, req leanRequest, check func(status int, body []byte) error) error {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.slots }()
	c.mu.Lock()
	lc := &leanConn{}
	if n := len(c.idle); n > 0 {
		lc, c.idle = c.idle[n-1], c.idle[:n-1]
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.idle = append(c.idle, lc)
		c.mu.Unlock()
	}()
	status, body, err := lc.roundTrip(c.addr, req)
	if err != nil {
		lc.close() // the next call dials again
		return err
	}
	return check(status, body)
}

// leanConn is one connection with its reader and the last body read.
type leanConn struct {
	nc   net.Conn
	r    *bufio.Reader
	body []byte
	// closeAfter: the server said Connection: close.
	closeAfter bool
	renewAt    time.Time // when the connection's deadline is next pushed back
}

func (lc *leanConn) close() {
	if lc.nc != nil {
		_ = lc.nc.Close()
		lc.nc, lc.r = nil, nil
	}
}

const leanTimeout = 30 * time.Second

func (lc *leanConn) roundTrip(addr string, req leanRequest) (int, []byte, error) {
	if lc.nc == nil {
		nc, err := net.DialTimeout("tcp", addr, leanTimeout)
		if err != nil {
			return 0, nil, err
		}
		lc.nc, lc.r, lc.renewAt = nc, bufio.NewReaderSize(nc, 16<<10), time.Time{}
	}
	// A stalled server fails the call within leanTimeout. The deadline
	// covers the write and the read and is pushed back at most once a
	// second, not per call (each move is a timer update).
	if now := time.Now(); now.After(lc.renewAt) {
		if err := lc.nc.SetDeadline(now.Add(leanTimeout)); err != nil {
			return 0, nil, err
		}
		lc.renewAt = now.Add(time.Second)
	}
	if _, err := lc.nc.Write(req); err != nil {
		return 0, nil, err
	}
	status, body, err := lc.readResponse()
	if err == nil && lc.closeAfter {
		lc.close()
		lc.closeAfter = false
	}
	return status, body, err
}

// readResponse parses one HTTP/1.1 response: the status line, the headers
// that frame the body (Content-Length, Transfer-Encoding: chunked) or end
// the connection (Connection: close), and the body.
func (lc *leanConn) readResponse() (int, []byte, error) {
	line, err := lc.line()
	if err != nil {
		return 0, nil, fmt.Errorf("read status line: %w", err)
	}
	// "HTTP/1.1 202 Accepted"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	length, chunked := -1, false
	for {
		line, err := lc.line()
		if err != nil {
			return 0, nil, fmt.Errorf("read headers: %w", err)
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return 0, nil, fmt.Errorf("malformed header %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 {
				return 0, nil, fmt.Errorf("malformed Content-Length %q", value)
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			chunked = asciiEqualFold(value, "chunked")
			if !chunked {
				return 0, nil, fmt.Errorf("unsupported Transfer-Encoding %q", value)
			}
		case asciiEqualFold(name, "Connection"):
			lc.closeAfter = asciiEqualFold(value, "close")
		}
	}
	lc.body = lc.body[:0]
	switch {
	case chunked:
		err = lc.readChunked()
	case length >= 0:
		err = lc.readN(length)
	default: // no framing: the body runs to the end of the connection
		lc.closeAfter = true
		lc.body, err = io.ReadAll(lc.r)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read body: %w", err)
	}
	return status, lc.body, nil
}

// line reads one CRLF-terminated line, without the CRLF; it is valid until
// the next read.
func (lc *leanConn) line() ([]byte, error) {
	line, err := lc.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("line too long")
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func (lc *leanConn) readN(n int) error {
	start := len(lc.body)
	lc.body = append(lc.body, make([]byte, n)...)
	_, err := io.ReadFull(lc.r, lc.body[start:])
	return err
}

func (lc *leanConn) readChunked() error {
	for {
		line, err := lc.line()
		if err != nil {
			return err
		}
		size, _, _ := bytes.Cut(line, []byte(";")) // chunk extensions
		n, err := strconv.ParseInt(string(bytes.TrimSpace(size)), 16, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("malformed chunk size %q", line)
		}
		if n == 0 {
			for { // trailers, up to the blank line
				line, err := lc.line()
				if err != nil {
					return err
				}
				if len(line) == 0 {
					return nil
				}
			}
		}
		if err := lc.readN(int(n)); err != nil {
			return err
		}
		if line, err := lc.line(); err != nil || len(line) != 0 {
			return fmt.Errorf("chunk not followed by CRLF")
		}
	}
}

// asciiEqualFold compares a header token case-insensitively.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
