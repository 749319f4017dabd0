# tts-stream — the two commands are `make demo` and `make test`; everything else is a step of them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
EXTRAS ?= worker,gateway,espeak,dev,parquet
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-16)
REGISTRY ?= 0
STACK_FLAGS := $(if $(filter 1,$(REGISTRY)),--registry,)
# BROKERS=3: a three-node Kafka cluster; REDIS=sentinel|cluster: a replicated Redis. Given once to
# `make up`, the stack keeps that shape (its stack.env remembers it) until `scripts/stack.sh wipe`.
STACK_SHAPE := $(if $(filter command line,$(origin BROKERS)),TTS_STACK_BROKERS=$(BROKERS)) \
	$(if $(filter command line,$(origin REDIS)),TTS_STACK_REDIS_MODE=$(REDIS))
STACK_ENV_FILE = $${TTS_STACK_DATA_DIR:-.infra}/stack.env
PYTEST := $(PY) -m pytest

.PHONY: help
help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-16s %s\n",$$1,$$2}'

# ------------------------------------------------------------------------- setup -----------------
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install -q uv
	@echo "[install] $(VENV) with extras [$(EXTRAS)] (uv; cached downloads are reused)"
	$(UV) pip install --python $(PY) -q -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*; touch $@

.PHONY: install
install: $(STAMP)  ## create .venv and install the project with the worker, espeak and dev extras

.PHONY: cosyvoice
cosyvoice: install  ## the pinned CosyVoice source on the venv's path + the [cosyvoice] extra (TTS_COSYVOICE_ARCHIVES: use archives)
	scripts/cosyvoice.sh

.PHONY: test-model
test-model: cosyvoice  ## a tiny random-weight CosyVoice model (FAMILY=cosyvoice3|cosyvoice2, OUT=dir) for trying the engine
	$(VENV)/bin/tts-stream models make-test-model --family $${FAMILY:-cosyvoice3} --size tiny --out $${OUT:-.infra/test-models/$${FAMILY:-cosyvoice3}-tiny}

.PHONY: browser
browser:  ## Debian's chromium for the console's browser tests (idempotent)
	scripts/install-chromium.sh

.PHONY: up down status
up: install  ## start Kafka, Redis and S3 on 127.0.0.1 (REGISTRY=1 adds the schema registry, BROKERS=3 a Kafka cluster, REDIS=sentinel|cluster)
	$(STACK_SHAPE) scripts/stack.sh up $(STACK_FLAGS)
	rf=$$(sed -n 's/^TTS_STACK_BROKERS=//p' $(STACK_ENV_FILE)); isr=$$(( rf > 1 ? 2 : 1 )); \
	$(VENV)/bin/tts-stream --log-level WARNING topics ensure --partitions 6 --replication-factor $$rf --min-insync-replicas $$isr >/dev/null
down:  ## stop the processes `make up` started
	scripts/stack.sh down
status:  ## show which services run
	$(STACK_SHAPE) scripts/stack.sh status $(STACK_FLAGS)

# ------------------------------------------------------------------------- checks ----------------
.PHONY: lint
lint: install  ## ruff (lint + format check), mypy strict and the import layering (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

.PHONY: unit integration e2e
unit: install cosyvoice  ## unit tests only (no services)
	$(PYTEST) tests/unit -q
integration: cosyvoice up  ## integration tests against the local stack
	$(PYTEST) tests/integration -q
e2e: cosyvoice up browser  ## worker processes and the CLI as a user runs them
	$(PYTEST) tests/e2e -q

.PHONY: chaos chaos-ha fuzz
chaos: install  ## every chaos scenario on a private stack: kills, outages, broker restarts (~15-20 min)
	TTS_CHAOS_REPORT_DIR=$${TTS_CHAOS_REPORT_DIR:-.infra/chaos-reports} $(PYTEST) tests/chaos -q -s -p no:cacheprovider
chaos-ha: install  ## high availability: 3-broker Kafka, Redis Sentinel and Cluster failovers, a zombie worker, a network partition (~12 min; root for the namespaces)
	TTS_CHAOS_REPORT_DIR=$${TTS_CHAOS_REPORT_DIR:-.infra/chaos-reports} $(PYTEST) tests/chaos/test_ha.py -q -s -p no:cacheprovider
fuzz: install  ## deeper fuzzing: hypothesis with many examples, then atheris for FUZZ_SECONDS (60)
	TTS_FUZZ_EXAMPLES=$${TTS_FUZZ_EXAMPLES:-5000} $(PYTEST) tests/fuzz -q -p no:cacheprovider
	$(PY) tests/fuzz/atheris_intake.py -max_total_time=$${FUZZ_SECONDS:-60}

.PHONY: helm-test
helm-test: up  ## Helm chart renders and rules, KEDA scaling on real lag, Dockerfile and compose checks
	$(PYTEST) tests/helm -q

# ------------------------------------------------------------------------- kubernetes ------------
# A real single-node cluster (docs/deploy.md "Tried on a real cluster"); root only. Not part of
# `make test`: its cold start builds Kubernetes, KEDA and the image (docs/development.md).
K8S_POD_LISTENER = $(shell bash -c 'source infra/k8s/lib.sh && echo $$K8S_NODE_IP:$$K8S_KAFKA_POD_PORT')

.PHONY: k8s-up k8s-down k8s-image k8s-e2e
k8s-up:  ## a single-node Kubernetes cluster with KEDA (built from the Go module proxy, cached in .infra/k8s)
	infra/k8s/up.sh
k8s-down:  ## stop the cluster and remove its processes, interfaces, mounts and cgroups
	infra/k8s/down.sh
k8s-image: k8s-up  ## the cpu image from the Dockerfile (buildah on a Debian base), loaded into the cluster
	infra/k8s/images.sh tts
k8s-e2e: install k8s-image  ## helm install on the cluster: probes, KEDA scaling on lag, kills, upgrade (~15 min)
	TTS_STACK_KAFKA_POD_LISTENER=$(K8S_POD_LISTENER) scripts/stack.sh up
	$(PYTEST) tests/k8s -q -s -p no:cacheprovider

.PHONY: test
test: install cosyvoice up browser  ## install, start the stack, lint and run every suite that fits in a CI run
	@scripts/run-tests.sh

# ------------------------------------------------------------------------- housekeeping ----------
.PHONY: clean
clean:  ## remove caches and build output (keeps .venv and the stack's downloads)
	rm -rf .mypy_cache .ruff_cache .pytest_cache build *.egg-info

# ------------------------------------------------------------------------- the main job ----------
.PHONY: demo
demo: install up  ## set everything up, run a worker on espeak, submit samples, print results, save audio
	$(PY) scripts/demo.py

# ------------------------------------------------------------------------- benchmarks ------------
.PHONY: bench bench-smoke
bench: install up  ## the benchmark suite (~30 min): JSON and plots under bench/results/, see docs/performance.md
	$(PY) -m bench.run --repeats 3
bench-smoke: install up  ## every benchmark scenario once at a tiny size: completes and adds up (no speed judged)
	$(PY) -m bench.run --smoke
.PHONY: bench-commit
bench-commit: install up  ## exactly-once commit interval 20/100/250 ms: rate, transactions/s, latency (~10 min)
	$(PY) -m bench.commit_interval
.PHONY: bench-engine
bench-engine: cosyvoice  ## batched vs official CosyVoice at concurrency 1-64, tiny and mid models (~15 min on 2 CPUs)
	$(PY) -m bench.engine_bench $(if $(MODEL),--model $(MODEL),) $(if $(FP16),--fp16,) $(if $(LEVELS),--levels $(LEVELS),)
.PHONY: bench-producer
bench-producer: install up  ## producer side: client vs raw confluent-kafka, 1M-line backfill rate and memory (~10 min)
	$(PY) -m bench.producer_bench
.PHONY: bench-gateway
bench-gateway: install up  ## the HTTP gateway: added latency over a direct Kafka client, cache hits through two replicas (~2 min)
	$(PY) -m bench.gateway_bench
