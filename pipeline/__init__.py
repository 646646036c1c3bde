"""teambot's retrieval-augmented answering: indexing, querying, prompts, the guard and the stores."""

import os

import core  # noqa: F401 - turns Haystack's telemetry off before Haystack is imported
# transformers draws a "Loading weights" bar each time the embedder loads (every `teambot ask`):
# it means nothing to a user. teambot's own progress bars are plain tqdm and stay.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
