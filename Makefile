# dumpcatcher: `make demo` runs it, `make test` tests it (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO_BUILD := CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)"
BIN := bin
FUZZTIME ?= 15s

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

.PHONY: tools
tools: ## build the pinned test tools (kube-apiserver, etcd, minio, helm, helm-docs, mc, registry, actionlint, imgbuild, cert-manager and ServiceMonitor CRDs) into the cache
	@bash test/tools/install.sh >/dev/null

.PHONY: build
build: ## build the static binaries into bin/
	$(GO_BUILD) -o $(BIN)/dumpcatcher-webhook ./cmd/dumpcatcher-webhook
	$(GO_BUILD) -o $(BIN)/dumpcatcher-api ./cmd/dumpcatcher-api
	$(GO_BUILD) -o $(BIN)/dumpcatcher ./cmd/dumpcatcher
	$(GO_BUILD) -o $(BIN)/kubectl-dumpcatcher ./cmd/kubectl-dumpcatcher

.PHONY: lint
lint: ## gofmt and go vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	go vet ./...

.PHONY: test
test: lint ## everything: unit, golden, fuzz seeds, real JVM, envtest against a real kube-apiserver
	@assets=$$(bash test/tools/install.sh); \
	  KUBEBUILDER_ASSETS=$$assets DUMPCATCHER_REQUIRE_REAL=1 go test -count=1 -race -timeout 30m ./...
	go test -run '^$$' -fuzz FuzzInject -fuzztime $(FUZZTIME) ./webhook/inject

.PHONY: test-unit
test-unit: ## the fast loop: every test that needs no built tool (no MinIO, kube-apiserver or Helm; those skip), no -race
	go test -count=1 ./...

.PHONY: update-golden
update-golden: ## rewrite the golden files of the injection (webhook/inject) and of offline injection (webhook/manifest); review the diff
	go test ./webhook/inject ./webhook/manifest -run Golden -update

.PHONY: bench
bench: ## benchmarks (figures go to docs/benchmarks.md); as root also bench-cluster
	@assets=$$(bash test/tools/install.sh); \
	  KUBEBUILDER_ASSETS=$$assets DUMPCATCHER_REQUIRE_REAL=1 go test -run '^$$' -bench . -benchmem -count 1 ./webhook/inject ./webhook/admission ./sidecar/... && \
	  KUBEBUILDER_ASSETS=$$assets DUMPCATCHER_REQUIRE_REAL=1 go test -run '^$$' -bench PodCreation -benchtime 500x -count 1 ./webhook/server && \
	  KUBEBUILDER_ASSETS=$$assets DUMPCATCHER_REQUIRE_REAL=1 go test -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/bench
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory bench-cluster; \
	  else echo "bench: pod start-up on the e2e rig needs root: skipped (sudo make bench-cluster)"; fi

.PHONY: bench-cluster
bench-cluster: build ## (root) pod start-up with and without injection on a fresh e2e rig (cluster-up, benchmark, cluster-down)
	@bash test/cluster/up.sh >/dev/null
	@rc=0; DUMPCATCHER_E2E_KUBECONFIG=$(E2E_KUBECONFIG) go test -run '^$$' -bench PodStartup -benchtime 20x -timeout 20m ./test/e2e || rc=$$?; \
	  bash test/cluster/down.sh; exit $$rc

.PHONY: generate
generate: ## regenerate the chart README (helm-docs) and deploy/dumpcatcher.yaml (helm template) from the chart
	@KUBEBUILDER_ASSETS=$$(bash test/tools/install.sh helm helm-docs) go test -count=1 ./test/chart -run 'TestReadme|TestDeployManifest' -update

# Images: one per Dockerfile.* in the root. Each Dockerfile's final stage is
# the one list of what its image holds (COPY --from=build /out/NAME /path
# builds ./cmd/NAME into /path), its user, entrypoint, ports and labels;
# test/tools/imgbuild reads it and builds without a Docker engine.
DOCKERFILES := $(sort $(wildcard Dockerfile.*))
PLATFORMS ?= linux/amd64,linux/arm64
IMAGES_OUT ?= $(BIN)/images
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
.PHONY: images
images: ## build every image (Dockerfile.*) for $(PLATFORMS), reproducibly, without Docker: OCI layouts and SPDX SBOMs in bin/images/
	@imgbuild=$$(bash test/tools/install.sh imgbuild)/imgbuild; \
	  $$imgbuild build -src . -out $(IMAGES_OUT) -platforms $(PLATFORMS) -version $(VERSION) \
	    -revision $(REVISION) -epoch $(SOURCE_DATE_EPOCH) $(DOCKERFILES)

.PHONY: push
push: images ## push the multi-platform images to REGISTRY=host[:port]/path as REGISTRY/NAME:$(VERSION) (REGISTRY_USERNAME/REGISTRY_PASSWORD or ~/.docker/config.json)
	@if [[ -z "$(REGISTRY)" ]]; then echo "make push needs REGISTRY=host[:port]/path, e.g. REGISTRY=ghcr.io/dumpcatcher" >&2; exit 1; fi
	@imgbuild=$$(bash test/tools/install.sh imgbuild)/imgbuild; \
	  $$imgbuild push -in $(IMAGES_OUT) -registry $(REGISTRY) -tag $(VERSION)

IMAGE_REPO ?= ghcr.io/dumpcatcher
.PHONY: docker-images
docker-images: ## the same two images with a Docker engine (BuildKit), for the host platform, on distroless
	docker build -f Dockerfile.webhook --build-arg VERSION=$(VERSION) -t $(IMAGE_REPO)/dumpcatcher-webhook:$(VERSION) .
	docker build -f Dockerfile.sidecar --build-arg VERSION=$(VERSION) -t $(IMAGE_REPO)/dumpcatcher:$(VERSION) .

# Release: make release VERSION=x.y.z writes into bin/release/ the chart
# package (chart version and appVersion x.y.z, so the image tags default to
# x.y.z), the images (images/, with their SBOMs) and SHA256SUMS.
# RELEASE_BINARIES are main packages (./cmd/NAME) shipped as plain binaries
# for each platform as well.
RELEASE_OUT ?= $(BIN)/release
RELEASE_BINARIES := kubectl-dumpcatcher
.PHONY: release
release: ## VERSION=x.y.z: the chart package, the images and their SBOMs into bin/release/
	@if ! [[ "$(VERSION)" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$$ ]]; then \
	  echo "make release needs VERSION=x.y.z (semantic version without v), got '$(VERSION)'" >&2; exit 1; fi
	rm -rf $(RELEASE_OUT)
	@$(MAKE) --no-print-directory chart-package images IMAGES_OUT=$(RELEASE_OUT)/images
	@for b in $(RELEASE_BINARIES); do for p in $$(tr , ' ' <<<"$(PLATFORMS)"); do \
	  CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} go build -trimpath -buildvcs=false -ldflags "$(LDFLAGS)" \
	    -o $(RELEASE_OUT)/$$b-$${p%/*}-$${p#*/} ./cmd/$$b; done; done
	cd $(RELEASE_OUT) && find . -type f ! -name SHA256SUMS | LC_ALL=C sort | xargs sha256sum >SHA256SUMS

.PHONY: chart-package
chart-package: ## VERSION=x.y.z: helm package the chart into bin/release/ (version and appVersion x.y.z)
	@mkdir -p $(RELEASE_OUT)
	@helm=$$(bash test/tools/install.sh helm)/helm; \
	  $$helm package charts/dumpcatcher --version $(VERSION) --app-version $(VERSION) -d $(RELEASE_OUT)

.PHONY: demo
demo: ## (root) start the single-node cluster, install cert-manager, MinIO and the chart, watch a JVM's OOM dump reach the bucket; stays up
	@if [[ $$(id -u) != 0 ]]; then \
	  echo "make demo needs root: it starts a real Kubernetes node on this machine (kubelet, containerd, network" >&2; \
	  echo "interfaces, mounts, nft tables, cgroups). Run it with sudo, or 'make demo-local' (no cluster, no root)." >&2; \
	  exit 1; fi
	@$(MAKE) --no-print-directory build
	@bash test/demo/cluster.sh

.PHONY: demo-down
demo-down: ## (root) remove the demo's cluster and everything it changed on this machine (= cluster-down)
	@bash test/cluster/down.sh

.PHONY: demo-local
demo-local: build ## no cluster, no root: the injection offline, then a dump's whole way to a MinIO on 127.0.0.1
	@bash test/demo/offline.sh $(BIN)/dumpcatcher-webhook
	@bash test/demo/local.sh

.PHONY: clean
clean: ## remove build output (the tool cache stays)
	rm -rf $(BIN)

# The e2e rig (test/cluster): one real Kubernetes node on this machine, as
# root. The first cluster-up builds kubelet, kube-controller-manager,
# kube-scheduler and kube-proxy into the tool cache (minutes, once).
E2E_KUBECONFIG ?= /var/lib/dumpcatcher-e2e/admin.kubeconfig
.PHONY: cluster-up
cluster-up: build ## (root) start a single-node cluster with the project's images; prints its kubeconfig
	@bash test/cluster/up.sh

.PHONY: cluster-smoke
cluster-smoke: ## (root) the e2e scenarios (test/e2e) on the cluster-up cluster
	go test ./test/cluster
	DUMPCATCHER_E2E_KUBECONFIG=$(E2E_KUBECONFIG) go test -count=1 -v -timeout 25m ./test/e2e

.PHONY: cluster-down
cluster-down: ## (root) remove the cluster-up cluster and everything it changed on the host
	@bash test/cluster/down.sh

.PHONY: e2e
e2e: build ## (root) the end-to-end suite on a fresh cluster: cluster-up, cluster-smoke, cluster-down (also after a failure)
	@bash test/cluster/up.sh >/dev/null
	@rc=0; $(MAKE) --no-print-directory cluster-smoke || rc=$$?; bash test/cluster/down.sh; exit $$rc
