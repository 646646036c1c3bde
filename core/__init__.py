"""The base layer every other package builds on: settings, errors, answer types, logging,
metrics, the active-model registry, chat formats and the servers' endpoints. It imports no other
teambot package (import-linter checks it)."""

import os

# Haystack reports usage to a third-party service unless told not to, and a team's knowledge bot
# must not. Set here, in the package every other one imports first, before Haystack can be.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
