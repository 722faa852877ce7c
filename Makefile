# cxloop: two commands on a fresh clone — `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: install demo test lint bench train clean-data server server-stop report

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (cxloop needs Python 3.11; set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: install
	$(BIN)/cxloop run

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

# the baseline path beside its anchors at 10k and 100k rows (about 3 minutes), the per-stage figures,
# the whole main job at 10k / 100k / 1M rows with its re-run (about 30 minutes), enrich on a local Dask cluster,
# issue 2's plain-SVM bar, and the transformer path: the cascade's accuracy/speed curve with torch and ONNX int8
bench: install
	$(BIN)/python benchmarks/pipeline_speed.py
	$(BIN)/python benchmarks/ingest_enrich.py
	$(BIN)/python benchmarks/main_job_scale.py
	$(BIN)/python benchmarks/incremental_run.py
	$(BIN)/python benchmarks/dask_enrich.py
	$(BIN)/python benchmarks/baseline_reference.py
	$(BIN)/python benchmarks/cascade_serving.py
	$(BIN)/python benchmarks/cascade_serving.py --backend onnx-int8 --per-topic
	$(BIN)/python benchmarks/sentiment_serving.py --model models/artifacts/sentiment-transformer --model models/artifacts/sentiment-student

train: install
	$(BIN)/cxloop train sentiment

# a local Prefect server (127.0.0.1:4200, SQLite under CXLOOP_HOME) with the deployments of prefect.yaml and a worker
server: install
	CXLOOP_BIN=$(abspath $(BIN)) bash scripts/prefect_server.sh start

server-stop:
	CXLOOP_BIN=$(abspath $(BIN)) bash scripts/prefect_server.sh stop

report: install
	$(BIN)/cxloop report

clean-data:
	rm -rf data/cx.duckdb data/cx.duckdb.wal data/.prefect data/models
