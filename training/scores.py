"""Answer-quality scores used by `teambot eval`, kept simple enough to read in one sitting.

Both text scores compare a generated answer with the reference answer after the same
normalisation: lowercase, citation markers and punctuation removed, split on whitespace.
- token F1 (as in SQuAD): harmonic mean of precision and recall of the bag of words they
  share; word order is ignored.
- ROUGE-L: F-measure of the longest common subsequence of words; it rewards keeping the
  reference's word order, without requiring the words to be adjacent.
- citation compliance: over the examples whose reference cites sources ([1], [2]…), the share
  of generated answers that cite at least one source too.
- abstention rate: the share of answers that say the documents do not answer (the test split
  holds answerable questions only, so lower is better).
"""

from __future__ import annotations

import re
from collections import Counter

from pipeline.prompts import is_abstention

CITATION = re.compile(r"\[\d+\]")


def tokens(text: str) -> list[str]:
    text = CITATION.sub(" ", text.lower())
    return re.sub(r"[^\w\s]", " ", text).split()


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def cites(text: str) -> bool:
    return bool(CITATION.search(text))


def citation_compliance(predictions: list[str], references: list[str]) -> float | None:
    """Share of answers citing a source where the reference does; None if no reference cites."""
    pairs = [(p, r) for p, r in zip(predictions, references) if cites(r)]
    if not pairs:
        return None
    return sum(cites(p) for p, _ in pairs) / len(pairs)


def abstention_rate(predictions: list[str]) -> float:
    return sum(is_abstention(p) for p in predictions) / max(len(predictions), 1)
