"""The check after generation (pipeline/grounding.py): an answer is shown only when each of its
sentences is supported by a passage it cites. The answering path is in test_rag.py."""

from __future__ import annotations

import pytest
from haystack import Document

from core.settings import load_settings
from pipeline.grounding import GroundingCheck, claims

EXPENSES = ("Submit expense claims in Ledgerly within 30 days of purchase. Claims over 250 EUR need your "
            "manager's approval before you submit them.")


def test_the_sentences_checked_are_the_statements_without_citations_code_or_fragments():
    answer = "Submit claims in Ledgerly [1]. Yes.\n\n```sh\nledgerly submit --all\n```\nClaims over 250 EUR need approval [1][2]."
    assert claims(answer) == ["Submit claims in Ledgerly.", "Claims over 250 EUR need approval."]
    assert claims("") == []


@pytest.fixture(scope="module")
def check():
    from pipeline.embedders import document_embedder, text_embedder

    text = text_embedder(load_settings())
    text.warm_up()
    docs = document_embedder(load_settings())
    docs.warm_up()
    passage = docs.run(documents=[Document(content=EXPENSES)])["documents"]
    return GroundingCheck(text), passage


def test_an_answer_from_the_passage_is_supported_and_an_invented_one_is_not(check):
    grounding, passage = check
    supported = grounding.run(answer="You submit expense claims in Ledgerly, within 30 days of buying [1].",
                              documents=passage)
    invented = grounding.run(answer="Salaries are paid on the 25th of each month by bank transfer [1]. The "
                                    "payroll team sends payslips by email.", documents=passage)
    mixed = grounding.run(answer="You submit expense claims in Ledgerly [1]. Salaries are paid on the 25th of "
                                 "each month by bank transfer.", documents=passage)
    minimum = 0.35  # the threshold measured in the README
    assert supported["support"] >= 0.5 > minimum
    assert invented["support"] < minimum
    assert invented["support"] < mixed["support"] < supported["support"]
    assert mixed["weakest"].startswith("Salaries are paid")
    assert grounding.run(answer="Yes [1].", documents=passage)["support"] == 1.0  # nothing to check


def test_an_answer_that_cites_nothing_is_checked_against_every_passage_it_was_given(check):
    from core.answer import Answer, Outcome, Source
    from pipeline.querying import AnswerService

    grounding, passage = check
    other = grounding.embedder.run(text="The Tagus meeting room seats twelve people and has a projector.")["embedding"]
    documents = [Document(content="Tagus room", embedding=other, meta={"source": "office.txt"}), *passage]
    service = AnswerService(load_settings().model_copy(update={"min_support": 0.35}))  # no server is asked
    try:
        shown = Source(number=1, title="Office", path="office.txt", snippet="Tagus room", chunk_id="c", score=0.4)
        answer = Answer(question="Where do expense claims go?", text="You submit expense claims in Ledgerly within "
                        "30 days of purchase.", sources=[shown], retrieved=[shown], model="m", collection="C")
        service._ground(answer, documents)  # uncited: the best passage is shown, but every passage counts
    finally:
        service.close()
    assert answer.outcome is Outcome.ANSWERED and not answer.draft
