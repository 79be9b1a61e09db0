# mdmcerts: `make run` starts a demo on embedded defaults, `make test` runs the checks.
# Needs GNU make and python3 >= 3.11; everything else goes into .venv/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Stamps record which requirements are installed; pip runs again only when they change.
RUNTIME_STAMP := $(VENV)/.requirements.stamp
DEV_STAMP := $(VENV)/.requirements-dev.stamp

.DEFAULT_GOAL := help
.PHONY: help run test lint fmt clean

help:
	@echo "make run    set up .venv, migrate, bootstrap the demo, start web + worker + beat"
	@echo "make test   ruff check, makemigrations --check, pytest"
	@echo "make lint   ruff check and ruff format --check"
	@echo "make fmt    ruff format and ruff check --fix"
	@echo "make clean  remove caches and collected static files (keeps .venv and var/)"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "mdmcerts needs Python 3.11 or newer as $(PYTHON) (make PYTHON=python3.12 ...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) \
		|| { rm -rf $(VENV); echo "python3 -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; }

$(RUNTIME_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	@touch $@ $(RUNTIME_STAMP)

# scripts/run.py prints the demo credentials once the server answers, with its real URL.
run: $(RUNTIME_STAMP)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py bootstrap --demo --verbosity 0
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) scripts/run.py

# DATABASE_URL and CELERY_BROKER_URL from the environment win (CI: PostgreSQL and Redis);
# otherwise SQLite under var/ and Celery's in-memory broker.
test: export CELERY_BROKER_URL ?= memory://
test: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) manage.py makemigrations --check --dry-run
	@$(PY) -m pytest; status=$$?; \
		if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; \
		exit $$status

lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: $(DEV_STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache var/static
