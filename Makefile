# convex-shim. `make help` lists the targets.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -s -w -X main.version=$(VERSION)
# The stock Convex image for real builds; the tests substitute the stand-in.
BASE_IMAGE ?= ghcr.io/get-convex/convex-backend:latest

.PHONY: help build test deps image clean demo

help:
	@echo "make build   static binary in bin/convex-shim"
	@echo "make test    every test: unit, the binary as PID 1, Docker end-to-end"
	@echo "make image   Dockerfile.backend on BASE_IMAGE, with bin/convex-shim"
	@echo "make deps    install what the tests need (Debian, as root)"
	@echo "make demo    the seed's failure, the fix and a graceful stop, on a stand-in backend"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/convex-shim ./cmd/convex-shim

# What the tests need beyond Go: busybox-static for the stand-in image,
# iproute2 to bring up lo in test namespaces, and a running Docker engine.
deps:
	@missing=""; \
	[ -x /bin/busybox ] || missing="$$missing busybox-static"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing$$missing"; \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi
	@docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || { \
		echo "make deps: the Docker engine is not reachable (docker version failed); start it: the end-to-end tests need it" >&2; exit 1; }

test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...

image: build
	docker build -f Dockerfile.backend --target prebuilt --build-arg BASE_IMAGE=$(BASE_IMAGE) -t convex-backend-shim .

clean:
	rm -rf bin dist

# No Convex account needed: builds the stand-in backend and the shimmed image, shows
# ECONNREFUSED 127.0.0.1:80 on the stock image, the callbacks working through the shim, and
# docker stop on both.
demo: deps
	@bash scripts/demo.sh
