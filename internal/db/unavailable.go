package db

import (
	"database/sql/driver"
	"errors"
	"net"
	"strings"

	"github.com/lib/pq"
)

// IsUnavailable reports whether err means PostgreSQL could not be reached
// or went away (refused connection, broken connection, server shutting
// down or starting up), as opposed to an error in the statement: the
// request may succeed if retried later. The pool replaces broken
// connections by itself once the server is back.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	var pqErr *pq.Error
	switch {
	case errors.Is(err, driver.ErrBadConn):
		return true
	case errors.As(err, &ne):
		return true
	case errors.As(err, &pqErr):
		// 08: connection exception; 57P01-03: admin/crash shutdown,
		// cannot connect now (starting up or recovering).
		return pqErr.Code.Class() == "08" || strings.HasPrefix(string(pqErr.Code), "57P")
	}
	return false
}
