"""teambot's retrieval-augmented answering: indexing, querying, prompts and the feedback store."""

import os

# Haystack reports usage to a third-party service unless told not to; a team's knowledge bot must not.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
