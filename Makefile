# Conveyor developer entry points. `make run` and `make test` need only Go, PostgreSQL and
# Redis binaries on the machine; deploy/local/services.sh runs private instances on 127.0.0.1.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin

GO ?= go
SERVICES := deploy/local/services.sh

.PHONY: run test build services-start services-stop services-status fmt vet bench bench-load clean

run: ## build and run api, worker and scheduler against local services
	deploy/local/run.sh

test: ## go vet, gofmt check and go test -race against local services
	deploy/local/test.sh

build:
	$(GO) build ./...

services-start:
	$(SERVICES) start

services-stop:
	$(SERVICES) stop

services-status:
	$(SERVICES) status

fmt:
	$(GO) fmt ./...

vet:
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

bench-load: ## cmd/loadgen against durable PostgreSQL + its own Redis; LOADGEN_ARGS="-runs 5 worker"
	deploy/local/bench.sh $(LOADGEN_ARGS)

clean:
	rm -rf bin
