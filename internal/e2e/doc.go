// Package e2e holds end-to-end tests: they build the real api, worker and
// scheduler binaries, start them against real PostgreSQL and Redis (each
// test with its own database and Redis DB) and drive them over HTTP.
package e2e
