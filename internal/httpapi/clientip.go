package httpapi

import (
	"net"
	"net/netip"

	"github.com/labstack/echo/v4"
)

// clientIPExtractor decides what c.RealIP() (logs, per-address limits)
// returns. With no trusted proxies it is the TCP peer: X-Forwarded-For is
// ignored, since any client can send one. With TRUSTED_PROXIES it is the
// nearest address in X-Forwarded-For that is not a trusted proxy, so a
// client cannot pick its own address by prepending to the header. Echo
// trusts loopback and private networks by default; here nothing is trusted
// that the operator did not list.
func clientIPExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
