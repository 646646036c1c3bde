# The two commands of the README: `make demo` and `make test`.
VENV ?= $(HOME)/.cache/teambot/venv-$(shell sha256sum pyproject.toml | cut -c1-12)
TEAMBOT = $(VENV)/bin/teambot
QUESTION ?= How many days of paid vacation do full-time employees get?

.PHONY: bootstrap services demo test down

bootstrap:
	@bash scripts/bootstrap.sh "$(VENV)"

services: bootstrap
	$(TEAMBOT) services up

demo: services
	$(TEAMBOT) ingest examples/handbook
	$(TEAMBOT) ask "$(QUESTION)"

test: services
	$(VENV)/bin/pytest

down:
	$(TEAMBOT) services down
