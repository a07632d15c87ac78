# livepanel — two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# every development and test tool at the version CI last passed with; `make lock` moves them
CONSTRAINTS := constraints/dev.txt
# the lowest-versions run: the runtime floors of pyproject.toml and the few tools its tests use
LOWEST_VENV := .venv-lowest
LOWEST_EXTRAS := redis,metrics,otel,demo
LOWEST_TOOLS := pytest pytest-timeout hypothesis starlette httpx websockets hypercorn
LOCK_VENV := .venv-lock

.PHONY: install demo test lint typecheck pytest jstest reactpkg reacttest typed docs docscheck bench \
	soak clean services test-lowest lock dist

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# the demo needs livepanel[demo] only; a checkout that has the whole set already uses it
$(DEMO_STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -f $(STAMP) || $(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[demo]'
	touch $(DEMO_STAMP)

install: $(STAMP)

# What the tests need beyond pip, from Debian's packages: redis-server, redis-sentinel and
# redis-tools' redis-cli (tests start their own instances, Sentinels and Clusters), nginx
# (the deployment recipe's test), chromium (the browser tests; Playwright's own browser
# download is never used), tmux (`livepanel top` in a real terminal) and haproxy (the
# health-check recipe's test) and postgresql (the PostgreSQL backend's tests use the server
# on 127.0.0.1:5432, and start private clusters with its initdb and postgres). Installed
# only when missing; the server is started when it does not answer.
APT_NEEDS := $(if $(shell command -v redis-server),,redis-server) \
	$(if $(shell command -v redis-sentinel),,redis-sentinel) \
	$(if $(shell command -v redis-cli),,redis-tools) \
	$(if $(shell PATH="$$PATH:/usr/sbin" command -v nginx),,nginx-light) \
	$(if $(shell command -v chromium),,chromium) \
	$(if $(shell command -v caddy),,caddy) \
	$(if $(shell command -v tmux),,tmux) \
	$(if $(shell PATH="$$PATH:/usr/sbin" command -v haproxy),,haproxy) \
	$(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql)

services:
	@if [ -n "$(strip $(APT_NEEDS))" ]; then \
		echo "installing $(strip $(APT_NEEDS))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_NEEDS) >/dev/null; \
	fi
	@if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then \
		echo "starting PostgreSQL"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /usr/lib/postgresql | sort -n | tail -1) main start 2>/dev/null \
			|| service postgresql start; \
		for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	fi
	@psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1 \
		|| su postgres -c "createdb -h 127.0.0.1 test" 2>/dev/null || true

PY_DIRS := $(wildcard src tests examples benchmarks docs/hooks)

lint: $(STAMP)
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

typecheck: $(STAMP)
	$(BIN)/mypy src

pytest: $(STAMP) services typed reacttest
	$(BIN)/pytest --cov --cov-report=term $(PYTEST_ARGS)

# livepanel.js's pure parts (backoff, jitter, give-up) on Node's own test runner
jstest:
	node --test tests/js/

# the React hooks as an npm package (packages/livepanel-react), built and packed with npm pack
reactpkg:
	cd packages/livepanel-react && npm ci --no-audit --no-fund --loglevel=error && \
		rm -f livepanel-react-*.tgz && npm pack --silent >/dev/null

# the React example (ClawPanel on the generated types) with the packed package installed from
# its tarball, not from source: vitest, tsc, and the bundle the browser tests load
reacttest: reactpkg
	cd examples/react && npm ci --no-audit --no-fund --loglevel=error && \
		npm install --no-save --no-audit --no-fund --loglevel=error \
			../../packages/livepanel-react/livepanel-react-*.tgz && \
		npm test && npm run typecheck && npm run build

# the official AsyncAPI parser and the TypeScript compiler that tests/schema checks the
# generated documents with, from the committed lock file
typed:
	cd tests/schema/node && npm ci --no-audit --no-fund --loglevel=error

# the documentation site into site/ (gitignored); --strict fails on a broken link, reference
# or include (never add -q: mkdocs then hides the warnings that --strict turns into errors)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# the same strict build for make test, into a temporary folder removed afterwards
docscheck: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir "$$tmp"

test: lint typecheck docscheck jstest reacttest typed pytest

demo: $(DEMO_STAMP)
	$(BIN)/livepanel demo

# fan-out against peers (table, JSON, docs/img/benchmarks.png), then memory vs Redis latency
bench: $(STAMP) services
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/fanout.py --plot docs/img/benchmarks.png
	$(BIN)/python benchmarks/latency.py

# 2,000 clients on one worker for ten minutes with churn; exits 1 on any loss or duplicate
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --duration 600

# what the package index receives: the sdist and the wheel in dist/, checked as the index checks
# them (twine check renders the README as the package page does), then the wheel installed in a
# new virtualenv, away from this checkout, and imported there
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/twine check --strict dist/*
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		$(PYTHON) -m venv "$$tmp/venv" && \
		"$$tmp/venv/bin/python" -m pip install --quiet -c $(CONSTRAINTS) dist/*.whl && \
		cd "$$tmp" && env -u PYTHONPATH "$$tmp/venv/bin/python" -c \
		'import livepanel; print("installed and imported livepanel", livepanel.__version__)'

# the unit and Redis tests with the lowest version of each runtime dependency that
# pyproject.toml admits (constraints/lowest.txt), checked to be those versions before running
test-lowest: services
	test -x $(LOWEST_VENV)/bin/python || $(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install --quiet -c constraints/lowest.txt --upgrade pip
	$(LOWEST_VENV)/bin/python -m pip install --quiet -c constraints/lowest.txt \
		-e '.[$(LOWEST_EXTRAS)]' $(LOWEST_TOOLS)
	$(LOWEST_VENV)/bin/python constraints/floors.py --check
	$(LOWEST_VENV)/bin/pytest -q -p no:cacheprovider tests/unit tests/redis $(PYTEST_ARGS)

# on purpose only: resolve the newest versions pyproject.toml admits into constraints/dev.txt,
# and the floors with their test tools into constraints/lowest.txt; then run make test and
# make test-lowest, and commit both files with what moved (docs/releasing.md)
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	{ printf '%s\n' "# Development and test tools at the versions CI passed with (make lock)." \
		"# Used as pip constraints by make install and make test: nothing here is a requirement."; \
		$(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -v '^setuptools=='; \
	} > $(CONSTRAINTS)
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(PYTHON) constraints/floors.py > $(LOCK_VENV)/floors.txt
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -c $(LOCK_VENV)/floors.txt \
		-e '.[$(LOWEST_EXTRAS)]' $(LOWEST_TOOLS)
	{ printf '%s\n' "# The lowest runtime versions pyproject.toml admits, with the test tools that fit" \
		"# them (make lock); make test-lowest runs the unit and Redis tests on exactly these."; \
		$(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -v '^setuptools=='; \
	} > constraints/lowest.txt
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(LOWEST_VENV) $(LOCK_VENV) .coverage .pytest_cache .mypy_cache .ruff_cache site
