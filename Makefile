# The two commands of the README are `make demo` and `make test`; everything else is optional.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OPENVINO_STAMP := $(VENV)/.openvino-stamp
SAMPLE_QUERY ?= How do I fail over the Postgres primary when Patroni cannot elect a leader?
SAMPLE_USER ?= alice

.PHONY: install install-openvino demo test lint ui bench eval clean db-stop

$(STAMP): pyproject.toml constraints-torch.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: unpinned, a dependency would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints-torch.txt -e '.[dev]'
	# unstructured[pdf] pulls a torchvision that breaks sentence-transformers; the fast PDF
	# strategy does not use it.
	$(BIN)/pip uninstall --quiet -y torchvision
	touch $(STAMP)

install: $(STAMP)

# The openvino extra (RAG_EMBEDDING_BACKEND=openvino or openvino-int8), only when chosen:
# optimum-intel 2.2, the newest release, caps transformers below 5.6, so this installs
# transformers 5.5.4 in place of the 5.24 that `make install` resolves. `make bench` needs it.
$(OPENVINO_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints-torch.txt -e '.[dev,openvino]'
	# optimum-intel pulls torchvision again (see above).
	$(BIN)/pip uninstall --quiet -y torchvision
	touch $(OPENVINO_STAMP)

install-openvino: $(OPENVINO_STAMP)

demo: install
	$(BIN)/rag-pipeline run --sample-query "$(SAMPLE_QUERY)" --sample-user $(SAMPLE_USER)

lint: install
	$(BIN)/ruff check rag_pipeline rag_pipeline_tests scripts
	RAG_DAGSTER_PG_URL="$$($(BIN)/rag-pipeline db url --dagster)" \
		$(BIN)/dagster definitions validate -w workspace.yaml

# Two pytest-xdist workers (the machine's two cores), one test file per worker at a time so that a
# module's fixtures are built once; the longest files go first (rag_pipeline_tests/conftest.py orders
# them; xdist would otherwise put the files with the most tests first, and the two crash tests
# last). `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 2
test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Incremental re-indexing benchmark on 2,000 BEIR SciFact abstracts from ../shared (not needed
# by the demo); writes reports/bench.json and reports/bench.md. Then permission-filtered search
# latency and recall at 20,000 chunks: reports/search_scaling.{json,md}. Then query latency per
# stage, filtered HNSW recall and HTTP requests/s at 100,000 chunks derived from SciFact: the
# `query` key of reports/bench.json and reports/bench_query.md (about 25 minutes). First the
# embedding backends side by side (the `embedding` key; needs the openvino extra).
bench: install-openvino
	$(BIN)/python benchmarks/bench_embedding.py --docs 1000 --round 120 --out reports
	$(BIN)/python benchmarks/bench_incremental.py --docs 2000 --out reports
	$(BIN)/python benchmarks/bench_search_scaling.py --chunks 20000 --out reports
	$(BIN)/python benchmarks/bench_query.py --chunks 100000 --out reports

# Retrieval quality on BEIR SciFact from ../shared (not needed by the demo): imports it as a
# source, builds it through the pipeline into .rag_data/eval, scores vector/lexical/hybrid and a
# BM25 and a dense reference; writes reports/eval.{json,md} and reports/eval_per_query.jsonl.
# The full corpus takes 30+ minutes to embed on 2 cores: `make eval EVAL_DOCS=1000` for a subset.
EVAL_BEIR_DIR ?= ../shared/beir/scifact
EVAL_DOCS ?=
eval: install
	$(BIN)/python benchmarks/eval.py --beir "$(EVAL_BEIR_DIR)" --docs "$(EVAL_DOCS)" --out reports

ui: install
	$(BIN)/rag-pipeline ui

db-stop:
	$(BIN)/rag-pipeline db stop

clean: db-stop
	rm -rf .rag_data

# Headless screenshots of the Dagster UI (asset lineage, the active_index page, the latest run)
# into reports/ui, after `make demo`; fails if the webserver does not come up or a page lacks
# the text operators rely on. Needs Chromium (CHROMIUM=/path, default /usr/bin/chromium).
.PHONY: screenshots
screenshots: install
	$(BIN)/python scripts/ui_screenshots.py --out reports/ui
