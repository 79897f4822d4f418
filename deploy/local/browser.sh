#!/usr/bin/env bash
# Installs headless Chromium and chromedriver (Debian packages `chromium`, `chromium-driver`)
# for the dashboard browser test, if they are missing. Idempotent; called by test.sh.
# Prints the path of the browser on stdout.
set -euo pipefail

log() { printf '%s\n' "browser: $*" >&2; }

find_chromium() {
	local c
	for c in "${CHROMIUM_BIN:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
		if [[ -n $c && -x $c ]]; then
			printf '%s\n' "$c"
			return 0
		fi
	done
	return 1
}

if bin=$(find_chromium) && command -v chromedriver >/dev/null 2>&1; then
	printf '%s\n' "$bin"
	exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
	log "chromium is not installed; install it first, e.g.: sudo apt-get install -y chromium chromium-driver"
	exit 1
fi
log "installing chromium and chromium-driver with apt-get"
{ DEBIAN_FRONTEND=noninteractive apt-get update -q &&
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		chromium chromium-driver fonts-liberation; } </dev/null >&2
bin=$(find_chromium) || { log "chromium still not found after apt-get"; exit 1; }
printf '%s\n' "$bin"
