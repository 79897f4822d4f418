#!/usr/bin/env bash
# `make test`: local services, then go vet, a gofmt check and the race-enabled test suite.
# Extra `go test` flags: GO_TEST_FLAGS (e.g. GO_TEST_FLAGS='-run TestOrders -v'), or arguments.
# The services are left running for fast re-runs; `make services-stop` stops them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
command -v go >/dev/null 2>&1 || PATH=/usr/local/go/bin:$PATH
SERVICES=deploy/local/services.sh

"$SERVICES" start
eval "$("$SERVICES" env)"
echo "test: services stay running; stop them with: make services-stop" >&2

# Headless Chromium for the dashboard browser test (internal/e2e); installed once with apt-get.
if CHROMIUM_BIN=$(deploy/local/browser.sh); then
	export CHROMIUM_BIN
else
	echo "test: chromium is not available; the dashboard browser test will fail" >&2
fi

# Tools for the offline checks of deploy/ (kustomize, promtool, docker-compose); a missing one
# skips its test (kustomize falls back to go run).
if deploy_env=$(deploy/local/validate-deploy.sh env); then
	eval "$deploy_env"
else
	echo "test: deploy tools are not available; some deploy/ checks will be skipped" >&2
fi

failed=()
step() {
	echo "== $*" >&2
	"$@" || failed+=("$*")
}

# Go files to format-check: tracked and untracked-but-not-ignored, minus vendor/.
go_files() {
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git ls-files -z --cached --others --exclude-standard -- '*.go' ':!:vendor/*' ':!:**/vendor/*'
	else
		find . -name '*.go' -not -path '*/vendor/*' -not -path './.local/*' -print0
	fi
}
gofmt_l() {
	local unformatted
	unformatted=$(go_files | while IFS= read -r -d '' f; do
		if [[ -f $f ]]; then printf '%s\0' "$f"; fi # skip tracked files deleted in the work tree
	done | xargs -0 -r gofmt -l)
	if [[ -n $unformatted ]]; then
		printf 'gofmt: these files need formatting (run make fmt):\n%s\n' "$unformatted" >&2
		return 1
	fi
}

read -ra test_flags <<<"${GO_TEST_FLAGS:-}"

step go vet ./...
step gofmt_l
step go test -race -count=1 "${test_flags[@]}" "$@" ./...

# Fuzz the JSON endpoints (internal/httpapi, Fuzz*) for FUZZ_TIME each (default 2000x, i.e. 2,000
# inputs; a duration such as 10s also works; 0 skips): never a 5xx, nothing half-written. A failing
# input is saved under testdata/fuzz/. The default is a count, not a duration: Go 1.26's fuzz
# coordinator can report "context deadline exceeded" as a failure when a duration runs out while a
# worker is mid-input (go.dev/issue/75804, fixed in Go 1.27); a count has no deadline to race.
fuzz_api() {
	local t
	for t in $(go test -list '^Fuzz' ./internal/httpapi | grep '^Fuzz'); do
		go test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZ_TIME" -parallel 1 ./internal/httpapi || return 1
	done
}
FUZZ_TIME=${FUZZ_TIME:-2000x}
if [[ $FUZZ_TIME != 0 && $FUZZ_TIME != 0s && $FUZZ_TIME != 0x ]]; then
	step fuzz_api
fi

if ((${#failed[@]})); then
	printf 'test: FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "test: ok" >&2
