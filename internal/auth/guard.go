package auth

import (
	"context"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/conveyor-run/conveyor/internal/config"
)

// Guard holds the limits in front of the anonymous endpoints that hash a
// password (login, register, the dashboard's basic auth). Every limit is
// checked before any hashing, so a refused request costs no bcrypt.
type Guard struct {
	LoginAddr    LoginLimiter // login attempts per client address, any email
	RegisterAddr LoginLimiter // registrations per client address
	MonitorUser  LoginLimiter // failed dashboard logins per user name + address
	MonitorAddr  LoginLimiter // dashboard password checks per address
	Hashing      *HashGate    // password hashes computed at once, this process
}

// NewGuard builds the limits of c. With rdb they are counted in Redis and
// shared by every api replica (each falls back to counting in-process
// while Redis is down, reporting to onError); with a nil rdb they are
// in-process only (tests).
func NewGuard(rdb redis.UniversalClient, c config.Abuse, onError func(error)) *Guard {
	limiter := func(name string, max int, window time.Duration) LoginLimiter {
		if rdb == nil {
			return NewLimiter(max, window)
		}
		l := NewNamedRedisLimiter(rdb, name, max, window)
		l.OnError = onError
		return l
	}
	return &Guard{
		LoginAddr:    limiter("login-addr-limit", c.LoginAddrMax, c.LoginAddrWindow),
		RegisterAddr: limiter("register-addr-limit", c.RegisterAddrMax, c.RegisterAddrWindow),
		MonitorUser:  limiter("monitor-user-limit", c.MonitorMaxFailures, c.MonitorWindow),
		MonitorAddr:  limiter("monitor-addr-limit", c.MonitorAddrMax, c.MonitorWindow),
		Hashing:      NewHashGate(c.HashConcurrency, c.HashWait),
	}
}

// HashGate caps how many password hashes this process computes at once.
// bcrypt is slow by design: without a cap, a flood of logins from many
// addresses takes every core and slows every other request. A request that
// finds no free slot within the gate's wait is refused (429) rather than
// queued without bound.
type HashGate struct {
	slots chan struct{}
	wait  time.Duration
}

// NewHashGate allows n hashes at once; a caller waits at most wait for a slot.
func NewHashGate(n int, wait time.Duration) *HashGate {
	return &HashGate{slots: make(chan struct{}, max(n, 1)), wait: wait}
}

// Enter takes a slot, waiting up to the gate's wait (or until ctx ends).
// When ok, the caller must call leave once the hash is done.
func (g *HashGate) Enter(ctx context.Context) (leave func(), ok bool) {
	leave = func() { <-g.slots }
	select {
	case g.slots <- struct{}{}:
		return leave, true
	default:
	}
	if g.wait <= 0 {
		return nil, false
	}
	timer := time.NewTimer(g.wait)
	defer timer.Stop()
	select {
	case g.slots <- struct{}{}:
		return leave, true
	case <-timer.C:
	case <-ctx.Done():
	}
	return nil, false
}

// AddrKey is the limiter key of a client address: the address itself for
// IPv4, its /64 for IPv6 (one subscriber usually holds a whole /64, so
// counting single IPv6 addresses would let one client rotate through
// billions of them).
func AddrKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}
