# convex-shim. `make help` lists the targets.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
# Reproducible: no paths, no VCS stamp, no build ID; same commit, same bytes.
LDFLAGS := -s -w -buildid= -X main.version=$(VERSION)
GOBUILD := CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags "$(LDFLAGS)"
DIST    ?= dist
RELEASE_PLATFORMS := linux/amd64 linux/arm64
# The stock Convex image for real builds; the tests substitute the stand-in.
BASE_IMAGE ?= ghcr.io/get-convex/convex-backend:latest

.PHONY: help build test deps image release clean demo

help:
	@echo "make build   static binary in bin/convex-shim"
	@echo "make test    every test: unit, the binary as PID 1, Docker end-to-end"
	@echo "make image   Dockerfile.backend on BASE_IMAGE, with bin/convex-shim"
	@echo "make release static binaries for linux/amd64 and linux/arm64 and SHA256SUMS in dist/"
	@echo "make deps    install what the tests need (Debian, as root)"
	@echo "make bench   benchmarks vs direct, socat, HAProxy, nginx, tini & co, and Node callbacks, into docs/benchmarks.md (root, ~18 min)"
	@echo "make bench-deps  install what the benchmarks need (Debian, as root)"
	@echo "make demo    the seed's failure, the fix, a public origin (#386) and a graceful stop, on a stand-in backend"
	@echo "make soak    e2e/reliability at full size: 1,000,000 connections, 10,000 held, storms (root, ~11 min)"

build:
	$(GOBUILD) -o bin/convex-shim ./cmd/convex-shim

release:
	rm -rf $(DIST) && mkdir -p $(DIST)
	@for p in $(RELEASE_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		echo "GOOS=$$os GOARCH=$$arch go build -> $(DIST)/convex-shim-$$os-$$arch"; \
		GOOS=$$os GOARCH=$$arch $(GOBUILD) -o $(DIST)/convex-shim-$$os-$$arch ./cmd/convex-shim || exit 1; \
	done
	cd $(DIST) && sha256sum convex-shim-* > SHA256SUMS && cat SHA256SUMS

# What the tests need beyond Go: busybox-static for the stand-in image,
# iproute2 to bring up lo in test namespaces, docker-compose (v1, Debian's) for
# the compose examples' tests, Node (the reference URL parser for internal/whatwgurl,
# and the Node server of the preload tests), and a running Docker engine.
deps:
	@missing=""; \
	[ -x /bin/busybox ] || missing="$$missing busybox-static"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing$$missing"; \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi
	@docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || { \
		echo "make deps: the Docker engine is not reachable (docker version failed); start it: the end-to-end tests need it" >&2; exit 1; }

# Pinned linters and fuzzers; the full suite runs last so its summary closes
# the output.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# A count, not a duration: with a duration, Go's fuzz coordinator can fail a
# clean run with "context deadline exceeded" when its deadline races a busy
# worker (golang/go#75804, fixed in go1.27; seen here in FuzzParseForward).
# 100,000 inputs take 3-15 s per fuzzer on this machine.
FUZZTIME    ?= 100000x
FUZZERS     := cmd/convex-shim:FuzzParseArgs cmd/convex-shim:FuzzParseForward cmd/convex-shim:FuzzRouteOrigin internal/whatwgurl:FuzzParse
TEST_START  := $(shell date +%s)

test: deps
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@for pf in $(FUZZERS); do \
		p=$${pf%%:*}; f=$${pf#*:}; \
		echo "fuzz $$f, $(FUZZTIME)"; \
		out=$$($(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) ./$$p 2>&1) || { echo "$$out"; exit 1; }; \
		echo "$$out" | tail -1; \
	done
	@# -p 1: one package at a time. The Docker end-to-end packages then never share the two
	@# cores with e2e/reliability's load or release's cold builds; their stop timings are read
	@# from the containers' own logs either way (dockertest.StopTimeline).
	$(GO) test -count=1 -p 1 -timeout 40m ./...
	@echo "make test: passed in $$(( $$(date +%s) - $(TEST_START) ))s"

image: build
	docker build -f Dockerfile.backend --target prebuilt --build-arg BASE_IMAGE=$(BASE_IMAGE) -t convex-backend-shim .

clean:
	rm -rf bin dist

# No Convex account needed: builds the stand-in backend, the shimmed image and a test TLS
# edge, shows ECONNREFUSED 127.0.0.1:80 on the stock image, the callbacks working through the
# shim, a public https origin the container cannot resolve (#386) failing on the stock image
# and working through the shim with the edge seeing no callback, and docker stop on both.
demo: deps
	@bash scripts/demo.sh

# Benchmarks: not part of make test. bench/bench.sh runs bench/runner in a
# private network namespace against the binary make build ships.
.PHONY: bench bench-deps
bench:
	@BENCH_START=$$(date +%s.%N); export BENCH_START; \
	$(MAKE) --no-print-directory bench-deps build && bench/bench.sh

# socat is the seed's sidecar; HAProxy and nginx (with its stream module) are the
# peers a careful operator would pick; wrk cross-checks the Go load generator;
# tini (with tini-static), dumb-init and catatonit are the inits compared;
# ip and unshare make the namespace.
bench-deps:
	@missing=""; \
	for p in socat wrk haproxy nginx libnginx-mod-stream tini dumb-init catatonit; do \
		dpkg-query -W -f '$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v unshare >/dev/null || missing="$$missing util-linux"; \
	if [ -n "$$missing" ]; then \
		echo "make bench-deps: installing$$missing"; \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

# The long runs of e2e/reliability (docs/reliability.md): the same tests as
# make test at their full figures (1,000,000 short connections, 10,000 held
# for a minute with every descriptor back after close, 200
# storms of 1,000 SIGTERMs, 20,000-orphan floods). Not part of make test.
.PHONY: soak
soak: deps
	RELIABILITY_SOAK=1 $(GO) test -count=1 -timeout 60m -v ./e2e/reliability/
