package config

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"time"
)

// Abuse are the limits in front of the anonymous endpoints that cost the
// server CPU or send mail (api only). Counters live in Redis, so every api
// replica shares them; the password-hashing cap is per process, because the
// CPU it protects is.
type Abuse struct {
	// LoginAddrMax login attempts (any email) per client address per
	// LoginAddrWindow; LOGIN_MAX_FAILURES still limits each email.
	LoginAddrMax    int
	LoginAddrWindow time.Duration
	// RegisterAddrMax registrations per client address per RegisterAddrWindow.
	RegisterAddrMax    int
	RegisterAddrWindow time.Duration
	// MonitorMaxFailures failed dashboard logins per user name + address, and
	// MonitorAddrMax password checks per address, per MonitorWindow.
	MonitorMaxFailures int
	MonitorAddrMax     int
	MonitorWindow      time.Duration
	// HashConcurrency bcrypt computations at once in this process; a request
	// that finds none free within HashWait is a 429.
	HashConcurrency int
	HashWait        time.Duration
}

// DefaultAbuse are the limits with no variable set (also what servers
// built without a configuration, in tests, use).
func DefaultAbuse() Abuse {
	return Abuse{
		LoginAddrMax: 60, LoginAddrWindow: time.Minute,
		RegisterAddrMax: 10, RegisterAddrWindow: time.Hour,
		MonitorMaxFailures: 5, MonitorAddrMax: 20, MonitorWindow: 15 * time.Minute,
		// Half the CPUs: the other half stays free for every other request.
		HashConcurrency: max(1, runtime.GOMAXPROCS(0)/2), HashWait: 2 * time.Second,
	}
}

// abuse reads the abuse limits (see the README's configuration table).
func (p *parser) abuse() Abuse {
	d := DefaultAbuse()
	return Abuse{
		LoginAddrMax:       p.intRange("LOGIN_ADDR_MAX", d.LoginAddrMax, 1, 1_000_000),
		LoginAddrWindow:    p.duration("LOGIN_ADDR_WINDOW", d.LoginAddrWindow, time.Second),
		RegisterAddrMax:    p.intRange("REGISTER_ADDR_MAX", d.RegisterAddrMax, 1, 1_000_000),
		RegisterAddrWindow: p.duration("REGISTER_ADDR_WINDOW", d.RegisterAddrWindow, time.Second),
		MonitorMaxFailures: p.intRange("MONITOR_MAX_FAILURES", d.MonitorMaxFailures, 1, 1000),
		MonitorAddrMax:     p.intRange("MONITOR_ADDR_MAX", d.MonitorAddrMax, 1, 1_000_000),
		MonitorWindow:      p.duration("MONITOR_WINDOW", d.MonitorWindow, time.Second),
		HashConcurrency:    p.intRange("PASSWORD_HASH_CONCURRENCY", d.HashConcurrency, 1, 1024),
		HashWait:           p.duration("PASSWORD_HASH_WAIT", d.HashWait, 0),
	}
}

// trustedProxies parses TRUSTED_PROXIES: comma-separated CIDRs (or single
// addresses) of the reverse proxies whose X-Forwarded-For the api believes.
// Empty (the default): none, the TCP peer is the client.
func (p *parser) trustedProxies(name string) []netip.Prefix {
	v := p.str(name, "")
	if v == "" {
		return nil
	}
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(s)
			if aerr != nil {
				p.fail(name, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or an address such as 10.0.0.1", s))
				continue
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		if pfx.Bits() == 0 {
			p.fail(name, fmt.Errorf("%q would trust every address: anyone could choose their own client address", s))
			continue
		}
		out = append(out, pfx.Masked())
	}
	return out
}

// MailRules decide who may receive what (worker).
type MailRules struct {
	// PublicURL is the api's address as users reach it, the base of the
	// verification link in the welcome email (PUBLIC_URL).
	PublicURL string
	// UnverifiedMax emails per UnverifiedWindow may go to an address whose
	// owner has not proven it (the welcome email included); they never carry
	// user-chosen text. Proven addresses are never limited.
	UnverifiedMax    int
	UnverifiedWindow time.Duration
}

// mailRules reads PUBLIC_URL and the unverified-mail limit.
func (p *parser) mailRules() MailRules {
	m := MailRules{
		PublicURL:        strings.TrimRight(p.str("PUBLIC_URL", "http://"+DefaultHTTPAddr), "/"),
		UnverifiedMax:    p.intRange("UNVERIFIED_MAIL_MAX", 3, 1, 1000),
		UnverifiedWindow: p.duration("UNVERIFIED_MAIL_WINDOW", 24*time.Hour, time.Minute),
	}
	if err := validateHTTPURL(m.PublicURL); err != nil {
		p.fail("PUBLIC_URL", err)
	}
	return m
}

// workerSecret reads JWT_SECRET on the worker, where it is optional: it keys
// the verification links of welcome emails (without it they carry none).
func (p *parser) workerSecret() []byte {
	v := p.optional("JWT_SECRET", func(v string) error {
		if len(v) < minJWTSecretLen {
			return fmt.Errorf("must be at least %d bytes, like the api's", minJWTSecretLen)
		}
		return nil
	})
	if v == "" {
		return nil
	}
	return []byte(v)
}
