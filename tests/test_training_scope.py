"""What a fine-tune may learn from and where it may answer: the scope of the export.

An export takes only the answers from its collections (default: TEAMBOT_COLLECTION alone),
leaves out private, restricted and direct-message conversations unless the operator names them,
and scrubs the quoted documents too. The scope goes from the export's manifest into the run's
config.json and the activation (active_model.json); the answering service uses the fine-tune only
for questions whose collections are all inside it. No model is trained or served here.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from haystack import Document
from typer.testing import CliRunner

from core import active_model as active
from core.answer import Answer, Source
from core.settings import load_settings
from feedback.store import FeedbackStore
from pipeline.prompts import render
from teambot.cli import app
from tests.feedback_data import DOCS
from training import runs
from training.export import build_examples, export

RULES = """
[channels."C0PRIVATE"]
private = true
[channels."C0LEADS"]
allowed_users = ["U0LEAD"]
[channels."T0SECRET"]
allowed_groups = ["S0BOARD"]
"""
PASSAGE = "Questions about payroll go to Jane Doe, jane.doe@northwind.example or +44 20 7946 0958."


def _no_embedding(texts):
    return np.eye(len(texts), dtype=np.float32)  # no two questions alike: groups by source only


def _answer(store, question: str, doc: str, *, collection: str = "Handbook", platform: str = "slack",
            channel: str | None = "C0PUBLIC", workspace: str | None = "T0TEAM", passage: str | None = None,
            text: str = "As the handbook says [1].") -> str:
    """A 👍 answer recorded as the bots record it, from the handbook page `doc`."""
    title, path, content = DOCS[doc]
    content = passage or content
    prompt = render(question, [Document(id=f"{doc}-0", content=content, meta={"title": title, "source": path})])
    retrieved = [Source(number=1, title=title, path=path, snippet=content, chunk_id=f"{doc}-0", score=0.8)]
    answer = Answer(question=question, text=text, sources=retrieved, model="teambot-dev", collection=collection,
                    retrieved=retrieved, context=prompt[-1]["content"], prompt=prompt)
    store.record_answer(answer, platform=platform, user_id="U0ASKER", workspace=workspace, channel=channel,
                        thread=answer.id)
    store.rate(answer.id, platform=platform, user_id="U0VOTER", value=1)
    return answer.id


def _handbook(store) -> None:
    """Six public Handbook answers from six pages: enough for a train, dev and test split."""
    for n, doc in enumerate(["meals", "ledgerly", "rotation", "paging", "vacation", "sick"]):
        _answer(store, f"Handbook question {n} about {doc}?", doc)


def _questions(result) -> set[str]:
    return {e["question"] for split in ("train", "dev", "test") for e in getattr(result, split)}


def test_export_takes_only_answers_whose_every_collection_is_in_scope(tmp_path):
    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", collection="Handbook",
                             train_base_model="gemma3-270m")
    store = FeedbackStore.from_settings(settings)
    _handbook(store)
    _answer(store, "What is the travel budget for Q3?", "meals", collection="Finance+Handbook")
    _answer(store, "What are the salary bands?", "ledgerly", collection="Finance")
    _answer(store, "How do I deploy?", "windows", collection="Engineering")

    default = build_examples(settings, store, embed=_no_embedding)  # TEAMBOT_COLLECTION alone
    assert len(_questions(default)) == 6 and default.dropped["out_of_scope"] == 3
    assert default.summary()["scope"]["collections"] == ["Handbook"]

    wider = build_examples(settings, store, collections={"Handbook", "Engineering"}, embed=_no_embedding)
    assert "How do I deploy?" in _questions(wider)
    assert "What is the travel budget for Q3?" not in _questions(wider)  # Finance+Handbook: Finance is out
    assert wider.dropped["out_of_scope"] == 2

    both = build_examples(settings, store, collections={"Handbook", "Finance"}, embed=_no_embedding)
    assert {"What is the travel budget for Q3?", "What are the salary bands?"} <= _questions(both)


def test_private_restricted_and_direct_message_answers_are_left_out_unless_named(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    env = {"TEAMBOT_DATA_DIR": str(tmp_path), "TEAMBOT_TRAIN_BASE_MODEL": "gemma3-270m", "TEAMBOT_COLLECTION": "Handbook",
           "TEAMBOT_CHANNEL_RULES": str(rules), "TEAMBOT_CACHE_DIR": str(tmp_path / "cache")}
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    _handbook(store)
    private = _answer(store, "Private: my salary review?", "booking", channel="C0PRIVATE")
    _answer(store, "Leads: the reorg plan?", "carry", channel="C0LEADS")
    _answer(store, "Board: the acquisition?", "parental", channel="C0ANY", workspace="T0SECRET")
    _answer(store, "DM: my sick note?", "2fa", channel="D0ALICE")
    _answer(store, "Discord DM: my address?", "laptops", platform="discord", channel="900000000000000001", workspace=None)
    _answer(store, "Finance question?", "office", collection="Finance")

    runner = CliRunner()
    result = runner.invoke(app, ["feedback", "export", "--min-examples", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert "from a private channel: 1" in result.output
    assert "from a channel only some people may ask in: 2" in result.output
    assert "from a direct message: 2" in result.output
    assert "from a collection outside the scope: 1" in result.output
    written = "".join(p.read_text() for p in (tmp_path / "sft").glob("*.jsonl"))
    for question in ("Private:", "Leads:", "Board:", "DM:", "Finance question"):
        assert question not in written, question
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary["kept"] == 6 and summary["scope"] == {"collections": ["Handbook"], "include_channels": []}
    assert summary["dropped"] == {"private_channel": 1, "restricted_channel": 2, "direct_message": 2, "out_of_scope": 1}

    named = runner.invoke(app, ["feedback", "export", "--min-examples", "3", "--collections", "Handbook",
                                "--include-channel", "C0PRIVATE", "--include-channel", "D0ALICE"], env=env)
    assert named.exit_code == 0, named.output
    summary = json.loads((tmp_path / "sft" / "summary.json").read_text())
    assert summary["kept"] == 8 and summary["scope"]["include_channels"] == ["C0PRIVATE", "D0ALICE"]
    assert summary["dropped"] == {"restricted_channel": 2, "direct_message": 1, "out_of_scope": 1}
    assert private in "".join(p.read_text() for p in (tmp_path / "sft").glob("*.jsonl"))


def test_quoted_documents_are_scrubbed_in_every_exported_file(tmp_path):
    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", collection="Handbook",
                             train_base_model="gemma3-270m", train_max_tokens=512)
    store = FeedbackStore.from_settings(settings)
    _handbook(store)
    _answer(store, "Who do I ask about payroll?", "first_week", passage=PASSAGE,
            text="Ask Jane Doe at jane.doe@northwind.example or +44 20 7946 0958 [1].")
    result = export(settings, store, min_examples=3, embed=_no_embedding)
    assert "Who do I ask about payroll?" in _questions(result)
    for path in result.out_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for personal in (b"jane.doe@northwind.example", b"7946 0958"):
                assert personal not in data, (path, personal)
    example = next(e for split in ("train", "dev", "test") for e in getattr(result, split)
                   if e["question"] == "Who do I ask about payroll?")
    assert "go to Jane Doe, [email] or [phone]." in example["messages"][1]["content"]


def test_the_scope_goes_from_the_export_through_the_run_into_the_activation(tmp_path, monkeypatch):
    """train() records its export's scope (stopped before any training step), publish() writes it
    into active_model.json (Ollama left out); a run without a scope is not activated."""
    from training import publish as publishing
    from training import train as training

    settings = load_settings(data_dir=tmp_path, cache_dir=tmp_path / "cache", collection="Handbook",
                             train_base_model="gemma3-270m", train_max_tokens=512)
    store = FeedbackStore.from_settings(settings)
    _handbook(store)
    _answer(store, "How do I deploy?", "windows", collection="Engineering")
    export(settings, store, collections={"Handbook", "Engineering"}, min_examples=3, embed=_no_embedding)

    class Stop(Exception):
        pass

    def no_trainer(*args, **kwargs):
        raise Stop

    loaded = SimpleNamespace(source="gguf", device="cpu", model=SimpleNamespace(config=SimpleNamespace(model_type="gemma3")))
    monkeypatch.setattr("training.models.load_base", lambda *a, **k: loaded)
    monkeypatch.setattr(training, "build_trainer", no_trainer)
    with pytest.raises(Stop):
        training.train(settings, training.TrainOptions(run_id="scoped"), log=lambda m: None)
    config = runs.read_json(tmp_path / "runs" / "scoped" / "config.json")
    assert config["scope"] == ["Engineering", "Handbook"]

    class Client:
        def close(self):
            pass

    monkeypatch.setattr(publishing, "_clients", lambda s: {settings.ollama_url: Client()})
    monkeypatch.setattr(publishing, "publish_merged", lambda *a, **k: None)
    monkeypatch.setattr(publishing, "has_model", lambda client, name: True)
    (tmp_path / "runs" / "scoped" / "adapter").mkdir()
    published = publishing.publish(settings, tmp_path / "runs" / "scoped", activate=True, force=True, route="merged",
                                   log=lambda m: None)
    state = json.loads((tmp_path / "active_model.json").read_text())
    assert state["model"] == published.model == "teambot-ft-scoped" and state["scope"] == ["Engineering", "Handbook"]
    assert active.active_scope(settings) == frozenset({"Engineering", "Handbook"})

    # A run trained before scopes existed (nothing recorded): published maybe, never activated.
    unscoped = tmp_path / "runs" / "old"
    (unscoped / "adapter").mkdir(parents=True)
    runs.write_json(unscoped / "config.json", {k: v for k, v in config.items() if k != "scope"})
    with pytest.raises(publishing.PublishRefused, match="no scope"):
        publishing.publish(settings, unscoped, activate=True, force=True, route="merged", log=lambda m: None)
    assert active.active_model(settings) == "teambot-ft-scoped"

    shown = CliRunner().invoke(app, ["publish", "--rollback"], env={"TEAMBOT_DATA_DIR": str(tmp_path)})
    assert shown.exit_code == 0 and f"active model: {settings.model}" in shown.output


def test_the_fine_tune_answers_only_questions_inside_its_scope(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    assert active.model_for(settings, "Handbook") == settings.model  # nothing activated
    active.set_active_model(settings, "teambot-ft-a", scope=["Handbook", "Engineering"])
    assert active.model_for(settings, "Handbook") == "teambot-ft-a"
    assert active.model_for(settings, ["Engineering", "Handbook"]) == "teambot-ft-a"
    assert active.model_for(settings, "Engineering+Handbook") == "teambot-ft-a"  # as answers record it
    assert active.model_for(settings, ["Handbook", "Finance"]) == settings.model
    assert active.model_for(settings, "Finance") == settings.model
    assert active.model_for(settings, []) == settings.model

    # Another fine-tune, then a rollback: the earlier one comes back with its own scope.
    active.set_active_model(settings, "teambot-ft-b", scope=["Finance"])
    assert active.model_for(settings, "Finance") == "teambot-ft-b" and active.model_for(settings, "Handbook") == settings.model
    assert active.rollback(settings) == "teambot-ft-a"
    assert active.model_for(settings, "Handbook") == "teambot-ft-a" and active.model_for(settings, "Finance") == settings.model

    # Activated without a scope (by hand, or before scopes existed): it answers nothing.
    (tmp_path / "active_model.json").write_text(json.dumps({"model": "teambot-ft-old", "previous": []}))
    assert active.active_model(settings) == "teambot-ft-old"
    assert active.model_for(settings, "Handbook") == settings.model


def test_the_answering_service_chooses_the_model_by_the_questions_collections(tmp_path):
    """The model is chosen before anything is generated: with nothing retrieved the service
    abstains, and the answer still names the model it would have asked."""
    from pipeline.querying import AnswerService

    settings = load_settings(data_dir=tmp_path)
    active.set_active_model(settings, "teambot-ft-a", scope=["Handbook"])
    service = AnswerService(settings)
    service.retrieve = lambda question, collection=None: ([], [], {})
    try:
        assert service.ask("How many vacation days do I get?", collection="Handbook").model == "teambot-ft-a"
        assert service.ask("What are the salary bands?", collection=["Handbook", "Finance"]).model == settings.model
        assert service.ask("How do I deploy?", collection="Engineering").model == settings.model
    finally:
        service.close()
