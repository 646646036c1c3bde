"""Retrieval data from votes: (question, passages it should find) pairs for the query adapter.

Written by `teambot feedback export` beside the SFT data (`data_dir/sft/retrieval/`), from the
same answers in the same scope, split by the same groups:
- a 👍 answer shown as written: the passages it cited are positives;
- a 👎 answer with a correction (a reviewer's outranks the users'): the passages the correction
  cites by number ([n] as the model was given them) are positives;
- the other passages the search returned for that question are hard negatives: the search put
  them in front of the model and they were not what answered it.
An answer that cites nothing, or searched several collections (a passage's collection is not
recorded), gives no pair.
"""

from __future__ import annotations

from pipeline.guard import CITATION
from training.answer_records import NOT_SHOWN
from training.scrub import scrub


def pair(record, vote: int, correction: str | None) -> dict | None:
    question = (record.question or "").strip()
    if not question or "+" in (record.collection or "+"):
        return None
    retrieved = [s for s in record.retrieved or [] if isinstance(s, dict) and s.get("chunk_id")]
    if vote > 0 and record.outcome not in NOT_SHOWN:
        cited = {s.get("chunk_id") for s in record.sources or [] if isinstance(s, dict) and s.get("chunk_id")}
    elif vote < 0 and correction:
        numbers = {int(n) for n in CITATION.findall(correction)}
        cited = {s["chunk_id"] for s in retrieved if s.get("number") in numbers}
    else:
        return None
    if not cited:
        return None
    paths = sorted({s["path"] for s in retrieved if s["chunk_id"] in cited and s.get("path")}
                   | {s.get("path") for s in record.sources or [] if isinstance(s, dict) and s.get("chunk_id") in cited
                      and s.get("path")})
    return {
        "answer_id": record.id, "question": scrub(question), "collection": record.collection,
        "positives": sorted(cited), "negatives": [s["chunk_id"] for s in retrieved if s["chunk_id"] not in cited],
        "sources": paths,
    }
