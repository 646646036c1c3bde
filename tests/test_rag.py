"""Ingest and answer against the real Weaviate and Ollama, as a user of `teambot` would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.answer import Turn
from core.errors import InvalidQuestion, KnowledgeBaseUnavailable, NoDocuments
from pipeline.feedback_sources import FeedbackSources
from pipeline.prompts import ABSTAIN
from teambot.cli import app
from tests.conftest import HANDBOOK, drop_collection, unique_collection
from tests.waiting import wait_until

# Each question's answer is in exactly one file of the sample handbook.
QUESTIONS = {
    "Which tool do I submit expense claims in?": "expenses.md",
    "How long does the primary on-call have to acknowledge a page before it escalates?": "on-call.md",
    "How many days of paid vacation do full-time employees get?": "time-off.md",
    "When is the deploy freeze at the end of the year?": "deploys.html",
    "How much does the company pay towards a gym membership?": "benefits.pdf",
    "How many people does the Tagus meeting room seat?": "office.txt",
}


@pytest.mark.parametrize("question", QUESTIONS)
def test_the_right_file_is_in_the_top_three(handbook, question):
    docs, _, _ = handbook.service.retrieve(question, handbook.collection)
    top3 = [Path(d.meta["source"]).name for d in docs[:3]]
    assert QUESTIONS[question] in top3


def test_answer_cites_the_file_that_holds_it(handbook):
    streamed: list[str] = []
    answer = handbook.service.ask(
        "How many days of paid vacation do full-time employees get?",
        collection=handbook.collection, on_token=streamed.append,
    )
    assert not answer.abstained
    assert "28" in answer.text
    assert "time-off.md" in {Path(s.path).name for s in answer.sources}
    assert "".join(streamed).strip() == answer.text
    # What the feedback store and training need is on the answer.
    assert answer.model and answer.id and answer.retrieved
    assert "28 days of paid vacation" in answer.context
    assert answer.prompt[0]["role"] == "system" and answer.prompt[-1]["role"] == "user"
    assert {"retrieve", "generate", "total"} <= set(answer.timings)


def test_an_empty_reply_from_the_model_is_shown_as_an_abstention(handbook):
    from testing.doubles import ScriptedAnswers

    service = ScriptedAnswers(handbook.service.settings, "", pipeline=True)
    streamed: list[str] = []
    answer = service.ask("Which tool do I submit expense claims in?", collection=handbook.collection,
                         on_token=streamed.append)
    assert "".join(streamed) == answer.text == ABSTAIN and answer.abstained and not answer.sources


@pytest.mark.parametrize("reply", ["[2]", "[2]."])
def test_a_bare_citation_from_the_model_becomes_the_passage_it_points_at(handbook, reply):
    from testing.doubles import ScriptedAnswers

    # A small model's habit, streamed "[", "2", "]": not even the bracket may show.
    service = ScriptedAnswers(handbook.service.settings, reply, pipeline=True, piece_chars=1)
    streamed: list[str] = []
    answer = service.ask("Which tool do I submit expense claims in?", collection=handbook.collection,
                         on_token=streamed.append)
    shown = "".join(streamed)
    assert shown == answer.text and not shown.startswith("[")  # the bare marker never reached the chat
    cited = answer.retrieved[1]
    assert answer.sources == [cited] and f'"{cited.snippet}" [2]' in answer.text and not answer.abstained
    assert not cited.snippet.startswith("#")  # the section heading is shown apart, not in the quote


def test_stop_ends_a_real_generation_at_its_next_token(handbook):
    """The asker's Stop reaches Ollama: the generation ends within a token of it, the answer is
    what was shown with the note that it stopped, and the server answers the next question."""
    import threading
    import time

    from core.answer import STOPPED_NOTE, Outcome

    stop, shown, stopped_at = threading.Event(), [], []

    def on_token(delta: str) -> None:
        shown.append(delta)
        if not stop.is_set() and len("".join(shown)) > 20:
            stop.set()
            stopped_at.append(time.perf_counter())

    answer = handbook.service.ask("Explain, step by step, how expense claims are filed and approved.",
                                  collection=handbook.collection, on_token=on_token, stop=stop)
    ended = time.perf_counter()
    assert stop.is_set() and answer.outcome is Outcome.STOPPED
    assert ended - stopped_at[0] < 5.0
    assert answer.text == "".join(shown).strip() and answer.text.endswith(STOPPED_NOTE)  # as shown, note included
    assert not handbook.service.ask("Which tool do expense claims go in?", collection=handbook.collection).abstained


def test_cli_ask_prints_answer_and_sources(handbook, monkeypatch):
    monkeypatch.setenv("TEAMBOT_DATA_DIR", str(handbook.service.settings.data_dir))
    monkeypatch.setenv("TEAMBOT_MAX_ANSWER_TOKENS", "60")
    result = CliRunner().invoke(
        app, ["ask", "When is the deploy freeze?", "-c", handbook.collection]
    )
    assert result.exit_code == 0, result.output
    assert "December 20" in result.output
    assert "Sources:" in result.output
    assert "deploys.html" in result.output


def test_question_about_absent_topic_abstains_without_the_model(handbook):
    answer = handbook.service.ask("What is the boiling point of tungsten?", collection=handbook.collection)
    assert answer.abstained
    assert answer.text == ABSTAIN
    assert answer.sources == []
    assert "generate" not in answer.timings  # the model was never asked to invent something


def test_follow_up_carries_the_thread(handbook):
    history = [Turn("How many days of paid vacation do full-time employees get?", "28 days [1].")]
    docs, _, _ = handbook.service.retrieve(
        f"{history[-1].question}\nAnd how many of them carry over?", handbook.collection
    )
    assert "time-off.md" in [Path(d.meta["source"]).name for d in docs[:3]]
    answer = handbook.service.ask("And how many of them carry over?", collection=handbook.collection, history=history)
    roles = [m["role"] for m in answer.prompt]
    assert roles == ["system", "user", "assistant", "user"]
    assert "28 days" in answer.prompt[2]["content"]


def test_a_follow_up_is_searched_with_what_the_thread_is_about_and_recorded(handbook, tmp_path):
    from feedback.store import FeedbackStore

    history = [Turn("Which tool pages the on-call engineer?", "PagerTree pages the primary on-call engineer [1].")]
    answer = handbook.service.ask("How long until it escalates?", collection=handbook.collection, history=history)
    assert answer.searched == "How long until it escalates?\ntool pages on-call engineer"
    assert Path(answer.retrieved[0].path).name == "on-call.md"
    assert "15 minutes" in answer.text
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}", user_salt="test")
    store.record_answer(answer, platform="slack", user_id="U1", channel="C1", thread="1.1")
    assert store.get_answer(answer.id).searched == answer.searched  # the review page shows it
    first = handbook.service.ask("Which tool pages the on-call engineer?", collection=handbook.collection)
    assert first.searched == ""


def test_an_answer_its_passages_do_not_support_is_replaced_by_the_abstention(services, handbook, tmp_path):
    from core.answer import Outcome
    from feedback.store import FeedbackStore
    from pipeline.querying import AnswerService

    question = "How many days of paid vacation do full-time employees get?"
    strict = AnswerService(services.model_copy(update={"min_support": 0.99}))  # no sentence is that close
    try:
        shown: list[str] = []
        answer = strict.ask(question, collection=handbook.collection, on_token=shown.append)
    finally:
        strict.close()
    assert answer.outcome is Outcome.UNGROUNDED and answer.abstained
    assert answer.text == ABSTAIN and answer.sources == [] and answer.draft
    assert "".join(shown).strip()  # it was streamed: the platforms replace the shown text (bots tests)
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}", user_salt="test")
    store.record_answer(answer, platform="slack", user_id="U1", channel="C1", thread="1.1")
    record = store.get_answer(answer.id)
    assert (record.outcome, record.answer_text, record.draft) == ("ungrounded", ABSTAIN, answer.draft)
    usual = handbook.service.ask(question, collection=handbook.collection)  # checked by default, and supported
    assert usual.outcome is Outcome.ANSWERED and not usual.draft and "ground" in usual.timings


POSTGRESQL_PAGES = Path("/usr/share/doc/postgresql-doc-15/html")  # Debian's postgresql-doc-15 (scripts/bootstrap.sh)


@pytest.fixture(scope="module")
def routine_pages(services):
    """Eight real reference pages about PostgreSQL functions and procedures, where one long page
    (CREATE FUNCTION) shares many words with most questions."""
    from pipeline.indexing import Indexer

    names = ("call", "createprocedure", "dropprocedure", "alterprocedure", "createfunction", "do", "dropfunction",
             "alterfunction")
    collection = unique_collection("Routines")
    Indexer(services, collection).ingest([POSTGRESQL_PAGES / f"sql-{name}.html" for name in names])
    yield collection
    drop_collection(services, collection)


def test_one_page_does_not_take_several_of_the_places_given_to_the_model_when_capped(services, routine_pages):
    from pipeline.querying import AnswerService

    question = "How do I run a one-off block of PL/pgSQL code without creating a function?"
    pages = {}
    for cap in (0, 1):
        service = AnswerService(services.model_copy(update={"chunks_per_page": cap}))
        try:
            docs, _, _ = service.retrieve(question, routine_pages)
        finally:
            service.close()
        pages[cap] = [Path(d.meta["source"]).name for d in docs]
    assert len(pages[0]) == len(pages[1]) == services.top_k
    assert len(set(pages[0])) < len(pages[0])  # uncapped, one page fills two places…
    assert len(set(pages[1])) == len(pages[1])  # …capped, each place is another page
    assert set(pages[0]) < set(pages[1])  # the pages found before are all still there, best first
    assert pages[1][0] == pages[0][0]


@pytest.mark.parametrize("question", ["", "   \n\t ", "x" * 5000])
def test_empty_and_huge_questions_get_a_clear_message(handbook, question):
    with pytest.raises(InvalidQuestion) as excinfo:
        handbook.service.ask(question, collection=handbook.collection)
    assert excinfo.value.user_message


def test_collections_keep_teams_apart(services, handbook, tmp_path):
    from pipeline.indexing import Indexer

    (tmp_path / "sales.md").write_text("# Sales playbook\n\nOur discount ceiling for enterprise deals is 17 percent.\n")
    sales = unique_collection("Sales")
    try:
        Indexer(services, sales).ingest([tmp_path])
        question = "What is the discount ceiling for enterprise deals?"
        sales_docs, _, _ = handbook.service.retrieve(question, sales)
        assert [Path(d.meta["source"]).name for d in sales_docs] == ["sales.md"]
        handbook_docs, _, _ = handbook.service.retrieve(question, handbook.collection)
        assert "sales.md" not in [Path(d.meta["source"]).name for d in handbook_docs]

        # A channel whose rule searches both (and one that does not exist): the best of all, in order.
        both, similarities, _ = handbook.service.retrieve(question, [handbook.collection, sales, "NoSuchTeam"])
        assert Path(both[0].meta["source"]).name == "sales.md"
        assert similarities == sorted(similarities, reverse=True) and len(both) <= services.top_k
        expenses = "Which tool do expense claims go in?"
        both, _, _ = handbook.service.retrieve(expenses, [sales, handbook.collection])
        assert Path(both[0].meta["source"]).name == "expenses.md"
        answer = handbook.service.ask(question, collection=(sales, handbook.collection))
        assert answer.collection == f"{sales}+{handbook.collection}" and "17" in answer.text
        # Nothing indexed under a name: that is what the user is told, not that the servers are down.
        with pytest.raises(NoDocuments):
            handbook.service.retrieve(question, ["NoSuchTeam", "NorThisOne"])
    finally:
        drop_collection(services, sales)


def test_votes_move_a_repeatedly_downvoted_document_below_a_useful_one(services, tmp_path, store_url, caplog):
    """👎 on answers citing a document lower its chunks' ranking at once (bounded, 0.5×–2×), 👍
    raise it: with one chunk given to the model, the question is answered from the other page."""
    from bots.conversation import Conversations
    from core.answer import Answer, Source
    from feedback.store import FeedbackStore
    from pipeline.indexing import Indexer
    from pipeline.querying import AnswerService

    shutil.copytree(HANDBOOK, tmp_path, dirs_exist_ok=True)  # the two VPN pages among others
    (tmp_path / "vpn-legacy.md").write_text(
        "# VPN\n\nTo connect to the VPN, open the Cisco AnyConnect client and sign in with your VPN password.\n")
    (tmp_path / "vpn.md").write_text(
        "# VPN\n\nTo connect to the VPN, install WireGuard and import your VPN profile from the IT portal.\n")
    collection = unique_collection("Vpn")
    settings = services.model_copy(update={"top_k": 1, "document_votes_refresh": 0.0})
    service = AnswerService(settings)
    store = FeedbackStore(store_url)
    try:
        Indexer(settings, collection).ingest([tmp_path])
        question = "How do I connect to the VPN?"
        first = service.retrieve(question, collection)[0][0].meta["source"]
        assert Path(first).name in ("vpn.md", "vpn-legacy.md")
        other = str(tmp_path / ({"vpn.md": "vpn-legacy.md", "vpn-legacy.md": "vpn.md"}[Path(first).name]))

        def voted(path: str, votes: list[int]) -> None:
            answer = Answer(question=question, text="…", model="teambot-dev", collection=collection,
                            sources=[Source(number=1, title="VPN", path=path, snippet="…", chunk_id="c", score=0.8)])
            store.record_answer(answer, platform="slack", user_id="asker", channel="C1", thread=answer.id)
            for user, value in enumerate(votes):
                store.rate(answer.id, platform="slack", user_id=f"U{user}", value=value)

        voted(first, [-1] * 5)
        voted(first, [-1] * 4 + [1])  # mostly 👎 again
        voted(other, [1, 1])
        assert store.document_votes(collection) == {first: (1, 9), other: (2, 0)}
        assert store.document_votes("Other") == {}  # votes belong to the collection answered from
        conversations = Conversations(settings, service, store)  # the bots' core hands the store's votes to retrieval

        def answered_from() -> list[str]:
            return [d.meta["source"] for d in service.retrieve(question, collection)[0]]

        wait_until(lambda: answered_from() == [other], timeout=10)  # votes are read in the background
        assert service.retrieve(question, collection)[0][0].meta["boost"] > 1
        # Votes that cannot be read (the database went down) leave the last ones read in use.
        down = []

        def votes(name: str):
            if down:
                raise ConnectionError("database is down")
            return store.document_votes(name)

        service.use_feedback(FeedbackSources(document_votes=votes))
        wait_until(lambda: answered_from() == [other], timeout=10)
        down.append(True)
        wait_until(lambda: answered_from() == [other] and "database is down" in caplog.text, timeout=10)
        assert answered_from() == [other] and "document votes for" in caplog.text
        conversations.close()
    finally:
        service.close()
        drop_collection(services, collection)


def test_reingest_updates_changed_removes_deleted_keeps_untouched(services, tmp_path):
    from pipeline.indexing import Indexer

    docs = tmp_path / "handbook"
    shutil.copytree(HANDBOOK, docs)
    collection = unique_collection("Incremental")
    try:
        indexer = Indexer(services, collection)
        first = indexer.ingest([docs])
        assert len(first.indexed) == len(list(HANDBOOK.iterdir()))
        ids_before = _ids_by_file(indexer)

        expenses = docs / "expenses.md"
        expenses.write_text(expenses.read_text().replace("Ledgerly", "Spendwise"))
        (docs / "office.txt").unlink()
        second = indexer.ingest([docs])

        assert [Path(p).name for p in second.indexed] == ["expenses.md"]
        assert [Path(p).name for p in second.removed] == ["office.txt"]
        ids_after = _ids_by_file(indexer)
        assert "office.txt" not in ids_after
        for name in set(ids_before) - {"expenses.md", "office.txt"}:
            assert ids_after[name] == ids_before[name], f"{name} was re-indexed without a change"
        texts = [d.content for d in indexer.store.filter_documents()]
        assert any("Spendwise" in t for t in texts)
        assert not any("Ledgerly" in t for t in texts)
        assert not any("Tagus" in t for t in texts)

        third = indexer.ingest([docs])
        assert third.indexed == [] and third.removed == [] and third.chunks_written == 0
    finally:
        drop_collection(services, collection)


def _ids_by_file(indexer) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for doc in indexer.store.filter_documents():
        out.setdefault(Path(doc.meta["source"]).name, set()).add(doc.id)
    return out


def test_unreadable_files_are_reported_and_the_rest_goes_on(services, tmp_path):
    from pipeline.indexing import Indexer

    (tmp_path / "good.md").write_text("# Parking\n\nStaff parking is on level -2 of the garage.\n")
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "corrupt.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\nthis is not a real pdf\n")
    (tmp_path / "fake.pdf").write_text("plain text pretending to be a PDF")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 8)
    collection = unique_collection("Broken")
    try:
        report = Indexer(services, collection).ingest([tmp_path])
        skipped = {Path(s.path).name: s.reason for s in report.skipped}
        assert set(skipped) == {"empty.md", "corrupt.pdf", "fake.pdf", "binary.txt"}
        assert "empty" in skipped["empty.md"]
        assert "not a PDF" in skipped["fake.pdf"]
        assert all(reason for reason in skipped.values())
        assert [Path(p).name for p in report.indexed] == ["good.md"]
    finally:
        drop_collection(services, collection)


def test_cli_ingest_prints_summary_and_skips(services, tmp_path, monkeypatch):
    monkeypatch.setenv("TEAMBOT_DATA_DIR", str(services.data_dir))
    (tmp_path / "a.md").write_text("# Desk booking\n\nBook desks in the Deskly app.\n")
    (tmp_path / "empty.txt").write_text("")
    collection = unique_collection("Cli")
    try:
        result = CliRunner().invoke(app, ["ingest", str(tmp_path), "-c", collection, "--no-progress"])
        assert result.exit_code == 0, result.output
        assert "1 indexed" in result.output and "1 skipped" in result.output
        assert "empty.txt: empty file" in result.output
    finally:
        drop_collection(services, collection)


def test_weaviate_down_is_a_clear_error(services, tmp_path):
    from pipeline.querying import AnswerService

    down = services.model_copy(update={"weaviate_url": "http://127.0.0.1:9", "weaviate_grpc_port": 10})
    with pytest.raises(KnowledgeBaseUnavailable) as excinfo:
        AnswerService(down).ask("Where do I submit expenses?")
    assert excinfo.value.user_message == "The knowledge base is unavailable, try again shortly."
