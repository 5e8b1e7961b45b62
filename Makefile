# Every target bootstraps .venv by itself: a fresh machine needs only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mpsdproxy demo

lint: $(STAMP)
	$(BIN)/ruff check .

# The HTML report test renders the page in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the HTML report test..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is not installed: the HTML report test will be skipped"; \
	  fi; }

# One worker per core, each test file on one worker (its fixtures built once).
test: $(STAMP) lint browser
	$(BIN)/pytest -q -n auto --dist loadfile

# Side by side with plain mitmproxy (wrk, nginx and valgrind from Debian's packages);
# writes docs/benchmarks.md. About 40 minutes; `$(BIN)/python bench/run.py --quick` is shorter.
bench: $(STAMP)
	@{ command -v wrk >/dev/null 2>&1 && command -v nginx >/dev/null 2>&1 \
	   && command -v valgrind >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx valgrind >/dev/null; \
	  else \
	    echo "wrk, nginx or valgrind is not installed: the benchmark falls back to its own load tool and counts no instructions"; \
	  fi; }
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
