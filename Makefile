# The two commands of the README: `make demo` and `make test`.
# The virtualenv lives outside the clone, one per locked set of dependencies: pyproject.toml up to
# its [tool.*] tables (which configure tools, not what is installed) and uv.lock.
VENV ?= $(HOME)/.cache/teambot/venv-$(shell sed '/^\[tool\./q' pyproject.toml | cat - uv.lock | sha256sum | cut -c1-12)
TEAMBOT = $(VENV)/bin/teambot
QUESTION ?= How many days of paid vacation do full-time employees get?

.PHONY: bootstrap services demo test test-quick venv down

bootstrap:
	@bash scripts/bootstrap.sh "$(VENV)"

services: bootstrap
	$(TEAMBOT) services up

demo: services
	$(TEAMBOT) ingest examples/handbook
	$(TEAMBOT) ask "$(QUESTION)"

test: services
	$(VENV)/bin/pytest

# The tests that need no server (no Weaviate, Ollama or PostgreSQL): seconds, not minutes.
test-quick: bootstrap
	$(VENV)/bin/pytest -m "not services"

venv:
	@echo $(VENV)

down:
	$(TEAMBOT) services down
