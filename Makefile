# beam-caption: `make help` lists the targets. Every target installs what it needs into .venv/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# google-auth probes the GCE metadata server when it looks for credentials; nothing here runs on GCE.
export NO_GCE_CHECK := true
export PYTHONUNBUFFERED := 1
DEMO_OUT ?= out/demo
CAMERA_ROLL ?= out/camera-roll

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint demo camera-roll-demo bench bench-full simulate clean browser

help: ## List the targets with one line each
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install beam-caption with its dev tools

test: $(STAMP) browser ## Run every test (unit, contract, integration against the local simulator)
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the unit and contract tests only
	$(PY) -m pytest -q -p no:cacheprovider tests/unit tests/contract $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check beam_caption tests bench

demo: $(STAMP) ## Caption the bundled sample photos against the local simulator into out/demo/, with report.html
	$(VENV)/bin/beam-caption run --simulate --input 'samples/*.jpg' --output $(DEMO_OUT) --overwrite
	$(VENV)/bin/beam-caption report $(DEMO_OUT) --html $(DEMO_OUT)/report.html

camera-roll-demo: $(STAMP) ## Generate a ~230-file phone library (HEIC, Live Photos, bursts, videos, sidecars), then estimate, run and report it against the simulator
	rm -rf $(CAMERA_ROLL)/library
	$(PY) -m tests.fixtures.camera_roll $(CAMERA_ROLL)/library
	$(VENV)/bin/beam-caption estimate --input $(CAMERA_ROLL)/library --near-dedupe
	$(VENV)/bin/beam-caption run --simulate --input $(CAMERA_ROLL)/library \
	  --output $(CAMERA_ROLL)/captions --overwrite --near-dedupe --context exif
	$(VENV)/bin/beam-caption report $(CAMERA_ROLL)/captions --html $(CAMERA_ROLL)/captions/report.html

# The gallery's browser test renders the page in headless Chromium (Debian's package). Where it
# cannot be installed (not root, no apt), the test skips and says why instead of failing the run.
browser: ## Install headless Chromium for the HTML gallery test, if missing
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the gallery browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	      >/dev/null || echo "browser: chromium could not be installed; its test will skip"; \
	  else echo "browser: chromium is missing and apt-get needs root; its test will skip"; fi; }

simulate: $(STAMP) ## Start the local OpenAI-compatible simulator on 127.0.0.1:8080
	$(VENV)/bin/beam-caption simulate --port 8080

bench: $(STAMP) ## Quick benchmarks (about 10 minutes, plus the corpus on a first run); results in bench/RESULTS.md
	$(PY) bench/run.py --quick

bench-full: $(STAMP) ## All benchmark scenarios (long)
	$(PY) bench/run.py --full

clean: ## Remove the virtual environment, caches and outputs
	rm -rf $(VENV) out .pytest_cache .ruff_cache *.egg-info

# -- Google Cloud Dataflow (never run in CI; templates/README.md walks through them) -------------
# PROJECT, REGION, BUCKET and IMAGE come from the environment; INPUT, OUTPUT and SECRET name the job.
.PHONY: template-build template-run dataflow-run
TEMPLATE ?= gs://$(BUCKET)/templates/beam-caption.json
MODEL ?= gpt-5.4-nano
JOB ?= beam-caption-$(shell date +%Y%m%d-%H%M%S)
# Each build pushes under a tag never used before (a UTC time and the commit); everything after
# the push names the image by the digest the registry returned, since a tag can be moved.
ifndef TAG
TAG := $(shell date -u +%Y%m%d-%H%M%S)-$(shell git rev-parse --short HEAD 2>/dev/null || echo local)
endif
# What the image's COPY lines read: the build context holds these and nothing else (never .venv/).
TEMPLATE_CONTEXT := pyproject.toml setup.py README.md beam_caption templates/launch.py \
  templates/Dockerfile
# Dataflow's launcher VMs and default workers are x86-64: a build on an ARM laptop must say so.
DOCKER_BUILD := docker build --platform linux/amd64
_about_PROJECT := your Google Cloud project id
_about_REGION := a Dataflow region, e.g. us-central1
_about_BUCKET := a Cloud Storage bucket name, without gs://, for staging, temp files and the template
_about_IMAGE := an Artifact Registry image path without a tag, e.g. us-central1-docker.pkg.dev/PROJECT/REPO/beam-caption
_about_INPUT := the images, e.g. gs://my-photos/**/*.jpg
_about_OUTPUT := the output folder, e.g. gs://my-captions/run1
_about_SECRET := the key in Secret Manager, e.g. projects/PROJECT/secrets/openai-api-key/versions/latest
# $(call require,VARS): stop with one clear line naming the first missing variable.
require = $(foreach v,$(1),$(if $($(v)),,$(error $(v) is not set: export $(v)=... ($(_about_$(v))); see templates/README.md)))
# A tag or digest in IMAGE would be pushed over instead of a new unique tag.
image_is_a_path = $(if $(findstring @,$(IMAGE))$(findstring :,$(lastword $(subst /, ,$(IMAGE)))),$(error IMAGE must be a path without a tag or digest ($(_about_IMAGE)); each build adds a unique TAG))
# The workers' image, when given, by digest (as template-build prints it): never a movable tag.
worker_image_is_pinned = $(if $(WORKER_IMAGE),$(if $(findstring @sha256:,$(WORKER_IMAGE)),,$(error WORKER_IMAGE must be pinned by digest (IMAGE@sha256:...), as make template-build prints it)))
# $(call pushed_digest,REF): the IMAGE@sha256:... the registry returned for REF (after its push).
pushed_digest = docker inspect --format='{{range .RepoDigests}}{{println .}}{{end}}' '$(1)' \
  | awk -v p='$(IMAGE)@sha256:' 'index($$0, p) == 1' | tail -n 1
# Dataflow submission needs real credentials, which on a GCE VM or Cloud Shell come from the
# metadata server that the rest of this Makefile keeps google-auth away from.
template-build template-run dataflow-run: export NO_GCE_CHECK := false

template-build: $(STAMP) ## Build and push the image (IMAGE), pinned by digest, and write the template spec to BUCKET
	$(call require,PROJECT REGION BUCKET IMAGE)$(image_is_a_path)
	$(VENV)/bin/beam-caption template-metadata --check templates/metadata.json
	@# 1: the workers' image (templates/Dockerfile's default target), pushed; its digest read back.
	@# 2: the launcher: that digest-pinned image plus BEAM_CAPTION_IMAGE=its digest (an image
	@#    cannot hold its own digest), pushed; the template spec names it by its digest.
	set -euo pipefail; ctx=$$(mktemp -d); trap 'rm -rf "$$ctx"' EXIT; \
	tar -c --exclude=__pycache__ $(TEMPLATE_CONTEXT) | tar -x -C "$$ctx"; \
	$(DOCKER_BUILD) -f "$$ctx/templates/Dockerfile" -t '$(IMAGE):$(TAG)' "$$ctx"; \
	docker push '$(IMAGE):$(TAG)'; \
	worker=$$($(call pushed_digest,$(IMAGE):$(TAG))); \
	test -n "$$worker" || { echo "no $(IMAGE)@sha256 digest after pushing $(TAG)" >&2; exit 1; }; \
	$(DOCKER_BUILD) -f "$$ctx/templates/Dockerfile" --target launcher \
	  --build-arg "WORKER_IMAGE=$$worker" -t '$(IMAGE):$(TAG)-launcher' "$$ctx"; \
	docker push '$(IMAGE):$(TAG)-launcher'; \
	launcher=$$($(call pushed_digest,$(IMAGE):$(TAG)-launcher)); \
	test -n "$$launcher" || { echo "no $(IMAGE)@sha256 digest after pushing $(TAG)-launcher" >&2; exit 1; }; \
	gcloud dataflow flex-template build $(TEMPLATE) --project=$(PROJECT) --image="$$launcher" \
	  --sdk-language=PYTHON --metadata-file=templates/metadata.json; \
	echo "template $(TEMPLATE): launcher $$launcher, workers $$worker"; \
	echo "make dataflow-run can use the same workers: export WORKER_IMAGE=$$worker"

template-run: ## Start a Dataflow job from the template (INPUT, OUTPUT, SECRET; MODEL, EXTRA)
	$(call require,PROJECT REGION BUCKET INPUT OUTPUT SECRET)
	@# ^~^ makes ~ the separator, so values may contain commas (gcloud topic escaping).
	gcloud dataflow flex-template run "$(JOB)" --project=$(PROJECT) --region=$(REGION) \
	  --template-file-gcs-location=$(TEMPLATE) \
	  --staging-location=gs://$(BUCKET)/staging --temp-location=gs://$(BUCKET)/temp \
	  '--parameters=^~^input=$(INPUT)~output=$(OUTPUT)~api_key_secret=$(SECRET)~model=$(MODEL)' \
	  $(if $(MAX_WORKERS),--max-workers=$(MAX_WORKERS) --num-workers=$(or $(NUM_WORKERS),$(MAX_WORKERS))) \
	  $(if $(MACHINE_TYPE),--worker-machine-type=$(MACHINE_TYPE)) $(EXTRA)

dataflow-run: $(STAMP) ## Submit `run` to Dataflow from this checkout (--setup_file; WORKER_IMAGE optional)
	$(call require,PROJECT REGION BUCKET INPUT OUTPUT SECRET)$(worker_image_is_pinned)
	$(VENV)/bin/beam-caption run --input '$(INPUT)' --output '$(OUTPUT)' \
	  --api-key-secret '$(SECRET)' --model '$(MODEL)' \
	  --runner DataflowRunner --project $(PROJECT) --region $(REGION) \
	  --temp_location gs://$(BUCKET)/temp --staging_location gs://$(BUCKET)/staging \
	  --setup_file ./setup.py $(if $(WORKER_IMAGE),--sdk_container_image=$(WORKER_IMAGE)) \
	  $(if $(MAX_WORKERS),--max_num_workers=$(MAX_WORKERS) --num_workers=$(or $(NUM_WORKERS),$(MAX_WORKERS))) \
	  $(if $(MACHINE_TYPE),--machine_type=$(MACHINE_TYPE)) $(RUN_ARGS)
