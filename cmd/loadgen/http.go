package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// httpClient keeps up to conns connections alive to one host.
func httpClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
			IdleConnTimeout: time.Minute,
		},
	}
}

// call sends one JSON request and decodes a 2xx answer into out (if not nil).
func call(ctx context.Context, c *http.Client, method, url, token string, body, out any) (int, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: decode: %w", method, url, err)
		}
	}
	return resp.StatusCode, nil
}

// latencies collects request latencies from many goroutines.
type latencies struct {
	mu  sync.Mutex
	ds  []float64 // ms
	err atomic.Int64
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.ds = append(l.ds, float64(d.Microseconds())/1000)
	l.mu.Unlock()
}

func (l *latencies) sorted() []float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := append([]float64(nil), l.ds...)
	sort.Float64s(s)
	return s
}

// closedLoop runs conns goroutines, each calling do back to back until d
// has passed; it returns how many calls succeeded and their latencies.
func closedLoop(ctx context.Context, conns int, d time.Duration, do func(ctx context.Context) error) (*latencies, time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	lat := &latencies{}
	var wg sync.WaitGroup
	start := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				t := time.Now()
				err := do(context.WithoutCancel(ctx))
				if err != nil {
					if lat.err.Add(1) == 1 {
						fmt.Printf("  first error: %v\n", err)
					}
					continue
				}
				lat.add(time.Since(t))
			}
		}()
	}
	wg.Wait()
	return lat, time.Since(start)
}

// openLoop starts do at a fixed rate for d, whatever the answers' latency
// (each call's latency counts from its scheduled start, so a stalled server
// cannot hide its queueing), at most maxInFlight at once.
func openLoop(ctx context.Context, rate int, d time.Duration, maxInFlight int, do func(ctx context.Context) error) (*latencies, int) {
	lat, _, dropped := warmOpenLoop(ctx, rate, 0, d, maxInFlight, nil, func(ctx context.Context, _ bool) error { return do(ctx) })
	return lat, dropped
}

// warmOpenLoop is openLoop preceded by warmup at the same rate: the calls
// scheduled in the warm-up go to warm, the others to lat, and do learns
// which it runs (measured). measure, if not nil, is called when the first
// measured call is due, so that meters start with the measurement. dropped
// counts the calls not sent because maxInFlight were in flight, warm-up
// included.
func warmOpenLoop(ctx context.Context, rate int, warmup, d time.Duration, maxInFlight int, measure func(),
	do func(ctx context.Context, measured bool) error) (lat, warm *latencies, dropped int) {
	lat, warm = &latencies{}, &latencies{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxInFlight)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	nWarm := int(warmup.Seconds() * float64(rate))
	n := nWarm + int(d.Seconds()*float64(rate))
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			select {
			case <-ctx.Done():
				wg.Wait()
				return lat, warm, dropped
			case <-time.After(w):
			}
		}
		measured := i >= nWarm
		if i == nWarm && measure != nil {
			measure()
		}
		select {
		case sem <- struct{}{}:
		default:
			dropped++ // too many in flight: counted, not sent
			continue
		}
		into := warm
		if measured {
			into = lat
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := do(ctx, measured); err != nil {
				if into.err.Add(1) == 1 {
					fmt.Printf("  first error: %v\n", err)
				}
				return
			}
			into.add(time.Since(at))
		}()
	}
	wg.Wait()
	return lat, warm, dropped
}
