package queue

import (
	"context"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// Before every command, go-redis checks the pooled connection it is about
// to use: it clears the connection's deadlines and tries a non-blocking
// read system call, to find a connection the server closed while it was
// idle. The worker's asynq server makes two commands per task, so that is
// two system calls and four deadline timer updates per task, for a case
// that costs nothing to handle later: a command sent on a connection the
// server closed fails with a network error and go-redis sends it again on
// a new one (it does so for any broken connection), and the server closed
// the old one before reading the command, so it ran once. go-redis skips
// the check for connections that expose no file descriptor (it always does
// for TLS), which is what plainConn does; and since go-redis sets a read or
// write deadline before each read or write (or never, with a timeout of
// -2), clearing them between commands changes nothing.

// plainConns is a go-redis hook that hands go-redis plainConns.
type plainConns struct{}

func (plainConns) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return plainConn{c}, nil
	}
}

func (plainConns) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (plainConns) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// plainConn is a connection without SyscallConn, whose deadlines are not
// cleared (see above).
type plainConn struct{ net.Conn }

func (c plainConn) SetDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return c.Conn.SetDeadline(t)
}
