"""teambot's retrieval-augmented answering.

indexing (files → chunks in Weaviate; html_converter, pdf_converter), embedders (the sentence
embedders, int8 ONNX on onnxruntime or sentence-transformers), stores and collection_aliases
(Weaviate clients and collection names), querying (`AnswerService`: retrieve,
prompt, generate), prompts, boosts (votes and reviewers rank documents), reviewed (approved
corrections served as answers), feedback_sources (what the bots hand it of both), guard and
links (what an answer may show), resilience and refresh (retries, breakers, cached reads).
"""

import os

import core  # noqa: F401 - turns Haystack's telemetry off before Haystack is imported
# transformers draws a "Loading weights" bar each time a torch embedder loads (every `teambot ask`):
# it means nothing to a user. teambot's own progress bars are plain tqdm and stay.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
