"""Where to set TEAMBOT_REVIEWED_ANSWER_SIMILARITY: a reviewed answer must reach paraphrases of
its question and never a different question on the same topic (serving the wrong reviewed answer
is worse than generating one).

Pairs of (reviewed question, new question) from the sample handbook's topics: paraphrases (the
same question asked otherwise: should be served the reviewed answer) and near misses (same
topic, same words, another question: should not). Prints precision and recall of "served" per
threshold, with the configured embedder (TEAMBOT_EMBEDDER, normalized); pipeline/embedders.py keeps
each embedder's threshold (`same_question`).

    python -m bench.reviewed_match
"""

from __future__ import annotations

import numpy as np

PARAPHRASES = [
    ("How many vacation days do I get?", "How many days of vacation do I get per year?"),
    ("How many vacation days do I get?", "how many VACATION days do i get??"),
    ("How do I roll back a service?", "How can I roll back a service?"),
    ("How do I submit an expense claim?", "How do I file an expense claim?"),
    ("When does the on-call rotation hand over?", "When does the on-call rotation change hands?"),
    ("Which tool pages the on-call engineer?", "What tool is used to page the on-call engineer?"),
    ("When is the postmortem due?", "When is the postmortem deadline?"),
    ("Who approves my vacation request?", "Who approves vacation requests?"),
    ("Can I carry over unused vacation days?", "Can unused vacation days be carried over?"),
    ("When do I need a doctor's note?", "When do I need a note from a doctor?"),
    ("How long is parental leave paid in full?", "For how long is parental leave fully paid?"),
    ("When does my screen lock automatically?", "When does my screen automatically lock?"),
    ("Which services need a YubiKey?", "Which services require a YubiKey?"),
    ("How long does production database access last?", "How long does access to the production database last?"),
    ("When is the Lisbon office open?", "What are the opening hours of the Lisbon office?"),
    ("Which days is lunch provided in Lisbon?", "On which days is lunch provided in the Lisbon office?"),
    ("How do I book a meeting room in Lisbon?", "How can I book a meeting room in the Lisbon office?"),
    ("When can we deploy to production?", "When are we allowed to deploy to production?"),
    ("Who has to approve a production promotion?", "Who must approve a promotion to production?"),
    ("What does my onboarding buddy do?", "What does an onboarding buddy do?"),
    ("Is there a deploy freeze at the end of the year?", "Is there a deploy freeze at year end?"),
    ("How much can I spend on meals when travelling?", "How much can I spend on meals while travelling?"),
    ("Are parking fines reimbursed?", "Do parking fines get reimbursed?"),
    ("What is the home office budget?", "How big is the home office budget?"),
]
NEAR_MISSES = [
    ("How many vacation days do I get?", "How many sick days do I get?"),
    ("How many vacation days do I get?", "Do part-time employees get vacation?"),
    ("How do I roll back a service?", "How do I promote a deploy to production?"),
    ("How do I submit an expense claim?", "When are approved expense claims paid?"),
    ("When does the on-call rotation hand over?", "Is there an allowance for being on call?"),
    ("Which tool pages the on-call engineer?", "What happens if the primary on-call doesn't acknowledge a page?"),
    ("When is the postmortem due?", "What counts as a SEV1?"),
    ("Who approves my vacation request?", "How far ahead should I book a vacation?"),
    ("Can I carry over unused vacation days?", "How many vacation days do I get?"),
    ("When do I need a doctor's note?", "What do I do when I'm sick?"),
    ("How long is parental leave paid in full?", "Is parental leave available to part-time staff?"),
    ("When does my screen lock automatically?", "Who do I tell if my laptop is stolen?"),
    ("Which services need a YubiKey?", "How many YubiKeys do I get?"),
    ("How long does production database access last?", "Are production database sessions recorded?"),
    ("When is the Lisbon office open?", "Where is the Lisbon office?"),
    ("Which days is lunch provided in Lisbon?", "How do I tell the office about dietary requirements?"),
    ("How do I book a meeting room in Lisbon?", "Can I book a phone booth in the Lisbon office?"),
    ("When can we deploy to production?", "Who has to approve a production promotion?"),
    ("Who has to approve a production promotion?", "How long does a rollback take?"),
    ("What does my onboarding buddy do?", "Is my onboarding buddy from my own team?"),
    ("Is there a deploy freeze at the end of the year?", "Who approves emergency fixes during the freeze?"),
    ("How much can I spend on meals when travelling?", "Can I expense a book for work?"),
    ("Are parking fines reimbursed?", "Is alcohol reimbursed?"),
    ("What is the home office budget?", "Can I expense a new phone contract?"),
]
THRESHOLDS = (0.75, 0.8, 0.85, 0.86, 0.88, 0.9, 0.92, 0.95)


def similarities(embed, pairs: list[tuple[str, str]]) -> np.ndarray:
    a = embed([p[0] for p in pairs])
    b = embed([p[1] for p in pairs])
    return (a * b).sum(axis=1)


def table(embed) -> list[tuple[float, float, float]]:
    """(threshold, precision, recall) of serving a reviewed answer."""
    same, other = similarities(embed, PARAPHRASES), similarities(embed, NEAR_MISSES)
    rows = []
    for threshold in THRESHOLDS:
        hits, false = int((same >= threshold).sum()), int((other >= threshold).sum())
        precision = hits / (hits + false) if hits + false else 1.0
        rows.append((threshold, precision, hits / len(same)))
    return rows


def main() -> None:
    from core.settings import load_settings
    from pipeline.querying import AnswerService

    service = AnswerService(load_settings())
    try:
        same, other = similarities(service.embed, PARAPHRASES), similarities(service.embed, NEAR_MISSES)
        print(f"paraphrases: {len(same)} pairs, cosine {same.min():.3f}–{same.max():.3f} (median {np.median(same):.3f})")
        print(f"near misses: {len(other)} pairs, cosine {other.min():.3f}–{other.max():.3f} (median {np.median(other):.3f})")
        print(f"{'threshold':>9}  {'precision':>9}  {'recall':>6}")
        for threshold, precision, recall in table(service.embed):
            print(f"{threshold:>9.2f}  {precision:>9.1%}  {recall:>6.1%}")
    finally:
        service.close()


if __name__ == "__main__":
    main()
