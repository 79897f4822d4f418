package db

import (
	"context"
	"net"
	"time"

	"github.com/lib/pq"
)

// Listen wakes the caller on every NOTIFY on channel until ctx ends, and
// never blocks it: not at start (the connection and LISTEN are made in the
// background and retried), not at shutdown (the connection is closed in the
// background: lib/pq's Close waits for a connection attempt in progress,
// which an unreachable server can make last minutes).
//
// The returned channel holds at most one pending wake-up; a reconnection,
// after which notifications may have been missed, is a wake-up too. Callers
// must poll as well: while the listener is down nothing wakes them. onErr,
// if not nil, hears about connection problems.
func Listen(ctx context.Context, dbURL, channel string, onErr func(error)) <-chan struct{} {
	l := pq.NewDialListener(timeoutDialer{5 * time.Second}, dbURL, 100*time.Millisecond, 10*time.Second,
		func(_ pq.ListenerEventType, err error) {
			if err != nil && onErr != nil {
				onErr(err)
			}
		})
	out := make(chan struct{}, 1)
	wake := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		// Blocks until the first connection is up (pq re-issues LISTEN on
		// every reconnection itself); Close releases it.
		if err := l.Listen(channel); err != nil && ctx.Err() == nil && onErr != nil {
			onErr(err)
		}
	}()
	go func() {
		for {
			select {
			case <-ctx.Done():
				go l.Close()
				return
			case <-l.Notify: // nil after a reconnection: wake up as well
				wake()
			}
		}
	}()
	return out
}

// timeoutDialer bounds each connection attempt of a listener.
type timeoutDialer struct{ timeout time.Duration }

func (d timeoutDialer) Dial(network, address string) (net.Conn, error) {
	return net.DialTimeout(network, address, d.timeout)
}

func (d timeoutDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout(network, address, min(timeout, d.timeout))
}
