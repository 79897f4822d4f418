#!/usr/bin/env bash
# Tools for the offline checks of deploy/ (deploy/*_test.go), installed if missing:
#   kustomize       sigs.k8s.io/kustomize/kustomize/v5 from the Go module proxy (go install)
#   promtool        unpacked from Debian's `prometheus` package (apt-get download; no service)
#   docker-compose  Debian's `docker-compose` package (apt-get install; needs root)
# Tools go to .local/tools. A tool that cannot be installed is reported and its test skipped;
# kustomize is not optional: the tests fall back to `go run` of the same version.
#
#   eval "$(deploy/local/validate-deploy.sh env)"   # install, print KUSTOMIZE_BIN=... exports
#   deploy/local/validate-deploy.sh                 # install, then go test ./deploy/...
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
command -v go >/dev/null 2>&1 || PATH=/usr/local/go/bin:$PATH
KUSTOMIZE_VERSION=v5.8.1 # keep in step with kustomizeModule in deploy/helpers_test.go
TOOLS=$ROOT/.local/tools
mkdir -p "$TOOLS"

log() { printf '%s\n' "validate-deploy: $*" >&2; }
as_root() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; }
apt_updated=
apt_update() {
	if [[ -z $apt_updated ]]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >&2 && apt_updated=1
	fi
}

kustomize_bin() {
	local bin=$TOOLS/kustomize-$KUSTOMIZE_VERSION
	if [[ ! -x $bin ]]; then
		log "building kustomize $KUSTOMIZE_VERSION"
		GOBIN=$TOOLS go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2 || return 1
		mv "$TOOLS/kustomize" "$bin"
	fi
	printf '%s\n' "$bin"
}

promtool_bin() {
	if command -v promtool >/dev/null 2>&1; then
		command -v promtool
		return
	fi
	local bin=$TOOLS/prometheus/usr/bin/promtool
	if [[ ! -x $bin ]]; then
		command -v apt-get >/dev/null 2>&1 || return 1
		log "fetching promtool from Debian's prometheus package (unpacked only)"
		local tmp
		tmp=$(mktemp -d)
		# apt-get download works without root only if the package lists are fresh enough.
		if ! (cd "$tmp" && apt-get download prometheus </dev/null >&2); then
			as_root && apt_update && (cd "$tmp" && apt-get download prometheus </dev/null >&2) || { rm -rf "$tmp"; return 1; }
		fi
		dpkg-deb -x "$tmp"/prometheus_*.deb "$TOOLS/prometheus" && rm -rf "$tmp"
	fi
	printf '%s\n' "$bin"
}

compose_bin() {
	if ! command -v docker-compose >/dev/null 2>&1; then
		as_root || return 1
		log "installing docker-compose with apt-get"
		apt_update && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose </dev/null >&2 || return 1
	fi
	command -v docker-compose
}

exports=()
if k=$(kustomize_bin); then exports+=("KUSTOMIZE_BIN=$k"); else log "kustomize: not built; the tests use go run $KUSTOMIZE_VERSION"; fi
if p=$(promtool_bin); then exports+=("PROMTOOL=$p"); else log "promtool: unavailable; TestPromtool will be skipped"; fi
if c=$(compose_bin); then exports+=("DOCKER_COMPOSE=$c"); else log "docker-compose: unavailable; TestComposeConfig will be skipped"; fi

if [[ ${1:-} == env ]]; then
	for e in "${exports[@]}"; do printf 'export %q\n' "$e"; done
	exit 0
fi
if ((${#exports[@]})); then export "${exports[@]}"; fi
exec go test -count=1 "$@" ./deploy/...
