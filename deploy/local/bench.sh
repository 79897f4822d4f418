#!/usr/bin/env bash
# Load benchmark (make bench-load): runs cmd/loadgen against a PostgreSQL with DEFAULT
# durability (fsync and synchronous_commit on, pg_stat_statements loaded) and a Redis of its
# own, both private instances on 127.0.0.1 started by deploy/local/services.sh — never the test
# instances, whose PostgreSQL runs with fsync off and whose Redis the tests share.
#
#   deploy/local/bench.sh [loadgen flags] [scenario...]   build, start the services, run
#   deploy/local/bench.sh stop|status|env                 manage the bench services
#
# Data: ${CONVEYOR_BENCH_DIR:-${CONVEYOR_DATA_DIR:-<repo>/.local}/bench}; ports
# CONVEYOR_BENCH_PG_PORT (55442) and CONVEYOR_BENCH_REDIS_PORT (56389). The services stay up
# after a run (stop them with `deploy/local/bench.sh stop`). Run it on a quiet machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DATA=${CONVEYOR_DATA_DIR:-$ROOT/.local}
export CONVEYOR_DATA_DIR=${CONVEYOR_BENCH_DIR:-$DATA/bench}
export CONVEYOR_PG_PORT=${CONVEYOR_BENCH_PG_PORT:-55442}
export CONVEYOR_REDIS_PORT=${CONVEYOR_BENCH_REDIS_PORT:-56389}
export CONVEYOR_PG_DURABLE=1
SERVICES=$ROOT/deploy/local/services.sh

case ${1:-} in
stop | status | env) exec "$SERVICES" "$1" ;;
esac

"$SERVICES" start
eval "$("$SERVICES" env)"
pg_pid=$("$SERVICES" status | sed -n 's/^postgres: running (pid \([0-9]*\).*/\1/p')

BIN=$ROOT/bin/bench
mkdir -p "$BIN"
(cd "$ROOT" && go build -o "$BIN/" ./cmd/api ./cmd/worker ./cmd/loadgen)

set -x
"$BIN/loadgen" -redis "$REDIS_URL" -db "$DATABASE_URL" -bin "$BIN" -pg-pid "${pg_pid:-0}" \
	-out "$CONVEYOR_DATA_DIR/logs" "$@"
