"""Retrieval data from votes: (question, passages it should find) pairs for the query adapter.

Written by `teambot feedback export` beside the SFT data (`data_dir/sft/retrieval/`), from the
same answers in the same scope, split by the same groups:
- a 👍 answer shown as written: the passages its text cites ([n]) are positives;
- a 👎 answer with a correction (a reviewer's outranks the users'): the passages the correction
  cites by number ([n] as the model was given them) are positives;
- the other passages the search returned for that question (of other pages) are hard negatives:
  the search put them in front of the model and they were not what answered it.
The question is what was searched: a follow-up's standalone rewrite where there was one.
An answer that cites nothing, or searched several collections (a passage's collection is not
recorded), gives no pair.
"""

from __future__ import annotations

from pipeline.guard import CITATION
from training.answer_records import NOT_SHOWN
from training.scrub import scrub


def pair(record, vote: int, correction: str | None) -> dict | None:
    # What was searched: a follow-up's standalone rewrite, else the question (the map moves that text's embedding).
    question = (record.searched or record.question or "").strip()
    if not question or "+" in (record.collection or "+"):
        return None
    retrieved = [s for s in record.retrieved or [] if isinstance(s, dict) and s.get("chunk_id")]
    if vote > 0 and record.outcome not in NOT_SHOWN:
        text = record.answer_text or ""
    elif vote < 0 and correction:
        text = correction
    else:
        return None
    # The [n] the text cites, not the answer's sources: an answer citing nothing shows its best passage
    # there, and learning that would teach the search what it already ranks first.
    numbers = {int(n) for n in CITATION.findall(text)}
    cited = [s for s in retrieved if s.get("number") in numbers]
    if not cited:
        return None
    paths = {s.get("path") for s in cited if s.get("path")}
    return {
        "answer_id": record.id, "question": scrub(question), "collection": record.collection,
        "positives": sorted({s["chunk_id"] for s in cited}),
        # Another passage of a cited page is no wrong answer: the gate and the benchmark count pages.
        "negatives": [s["chunk_id"] for s in retrieved if s not in cited and s.get("path") not in paths],
        "sources": sorted(paths),
    }
