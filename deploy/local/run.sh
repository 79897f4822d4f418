#!/usr/bin/env bash
# `make run`: local Redis + PostgreSQL, then api, worker and scheduler in the foreground.
# Ctrl-C stops the three binaries, and the services too if this script started them.
#
# Ports: API_PORT (8080), WORKER_METRICS_PORT (9091), SCHEDULER_METRICS_PORT (9092);
# CONVEYOR_PG_PORT / CONVEYOR_REDIS_PORT for the services (see services.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
command -v go >/dev/null 2>&1 || PATH=/usr/local/go/bin:$PATH
SERVICES=deploy/local/services.sh

API_PORT=${API_PORT:-8080}
WORKER_METRICS_PORT=${WORKER_METRICS_PORT:-9091}
SCHEDULER_METRICS_PORT=${SCHEDULER_METRICS_PORT:-9092}
API=http://127.0.0.1:$API_PORT

rand_hex() {
	if command -v openssl >/dev/null 2>&1; then
		openssl rand -hex "$1"
	else
		od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
	fi
}

# --- services ----------------------------------------------------------------------------------
rc=0
"$SERVICES" status >/dev/null 2>&1 || rc=$?
stop_services=0
if ((rc == 3)); then stop_services=1; fi # none was running: stop them again on exit
"$SERVICES" start
eval "$("$SERVICES" env)"

pids=()
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	trap - EXIT INT TERM
	local pid i
	if ((${#pids[@]})); then
		echo "run: stopping ${pids[*]}" >&2
		kill -TERM "${pids[@]}" 2>/dev/null || true
		for ((i = 0; i < 150; i++)); do # up to 30s for a graceful shutdown
			kill -0 "${pids[@]}" 2>/dev/null || break
			sleep 0.2
		done
		for pid in "${pids[@]}"; do
			if kill -0 "$pid" 2>/dev/null; then
				echo "run: pid $pid did not stop; killing it" >&2
				kill -KILL "$pid" 2>/dev/null || true
			fi
		done
		wait "${pids[@]}" 2>/dev/null || true
	fi
	if ((stop_services)); then
		"$SERVICES" stop
	else
		echo "run: services left running (deploy/local/services.sh stop)" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- build, configure, migrate -----------------------------------------------------------------
echo "run: building bin/api bin/worker bin/scheduler" >&2
mkdir -p bin
go build -o bin/ ./cmd/...

export API_TOKEN=${API_TOKEN:-$(rand_hex 24)}
export JWT_SECRET=${JWT_SECRET:-$(rand_hex 32)}
export DEV_MODE=${DEV_MODE:-true}
export LOG_FORMAT=${LOG_FORMAT:-text}
export HTTP_ADDR=127.0.0.1:$API_PORT
export PUBLIC_URL=${PUBLIC_URL:-http://$HTTP_ADDR} # the welcome email's verification link
export SCHEDULES_FILE=${SCHEDULES_FILE:-deploy/schedules.yaml}
# The dashboard is off without MONITOR_USERS: make a local login unless one is given.
if [[ -z ${MONITOR_USERS:-} ]]; then
	DASHBOARD_USER=admin
	DASHBOARD_PASSWORD=$(rand_hex 12)
	MONITOR_USERS="$DASHBOARD_USER:$(printf '%s\n' "$DASHBOARD_PASSWORD" | bin/api hashpassword)"
	dashboard_login="login $DASHBOARD_USER / $DASHBOARD_PASSWORD"
else
	dashboard_login="the users of MONITOR_USERS"
fi
export MONITOR_USERS

bin/api migrate

# --- start -------------------------------------------------------------------------------------
# start NAME CMD...: run CMD in the background, its output prefixed with [NAME].
start() {
	local name=$1
	shift
	"$@" </dev/null > >(sed -u "s/^/[$name] /") 2>&1 &
	pids+=("$!")
}
start api bin/api
start worker env METRICS_ADDR="127.0.0.1:$WORKER_METRICS_PORT" bin/worker
start scheduler env METRICS_ADDR="127.0.0.1:$SCHEDULER_METRICS_PORT" bin/scheduler

for ((i = 0; ; i++)); do
	curl -fsS -o /dev/null "$API/healthz" 2>/dev/null && break
	kill -0 "${pids[0]}" 2>/dev/null || { echo "run: api exited during start" >&2; exit 1; }
	((i < 150)) || { echo "run: $API/healthz did not answer within 30s" >&2; exit 1; }
	sleep 0.2
done

cat <<EOF

  Conveyor is running (Ctrl-C to stop)
    API                $API   (health $API/healthz, ready $API/readyz, metrics $API/metrics)
    Dashboard          $API/monitoring/   ($dashboard_login)
    Worker metrics     http://127.0.0.1:$WORKER_METRICS_PORT/metrics
    Scheduler metrics  http://127.0.0.1:$SCHEDULER_METRICS_PORT/metrics
    API token          $API_TOKEN

  Enqueue a task:
    TOKEN=$API_TOKEN
    curl -s -X POST $API/api/v1/tasks -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' -d '{"type":"system:ping","payload":{},"retention":3600}'
  Look it up (id from the answer above; ?wait=10s waits for it to finish; "retention" kept it 1 h):
    curl -s "$API/api/v1/tasks/<id>?wait=10s" -H "Authorization: Bearer \$TOKEN"
  As a user: register, log in, create an order (README: "A tour with curl"):
    curl -s -X POST $API/api/v1/auth/register -H 'Content-Type: application/json' -d '{"email":"ada@example.com","password":"correct horse","name":"Ada"}'
    JWT=\$(curl -s -X POST $API/api/v1/auth/login -H 'Content-Type: application/json' -d '{"email":"ada@example.com","password":"correct horse"}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
    curl -s -X POST $API/api/v1/orders -H "Authorization: Bearer \$JWT" -H 'Content-Type: application/json' -d '{"currency":"EUR","items":[{"sku":"book","quantity":2,"unit_price_cents":1250}]}'

EOF

# Run until Ctrl-C / SIGTERM, or until one of the processes exits.
status=0
wait -n "${pids[@]}" || status=$?
echo "run: a process exited (status $status); shutting down" >&2
exit 1
