"""The skeleton a user meets first: the command, its settings, and the two real servers."""

from __future__ import annotations

import uuid

import ollama
import pytest
import weaviate
from typer.testing import CliRunner
from weaviate.classes.config import Configure, DataType, Property

from pipeline.stores import weaviate_credentials
from teambot import devmodel
from teambot.cli import app
from core.settings import DEV_MODEL, SettingsError, load_settings

runner = CliRunner()
VERBS = ["ingest", "ask", "slack", "discord", "feedback", "train", "eval", "publish", "services"]


def test_help_lists_every_verb():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in VERBS:
        assert verb in result.output


def test_settings_come_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TEAMBOT_MODEL", "llama2:7b-chat")
    monkeypatch.setenv("TEAMBOT_TOP_K", "7")
    monkeypatch.setenv("TEAMBOT_CHANNEL_COLLECTIONS", '{"C042": "Sales"}')
    monkeypatch.setenv("TEAMBOT_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.model == "llama2:7b-chat"
    assert settings.top_k == 7
    assert settings.collection_for("C042", "T1") == "Sales"
    assert settings.collection_for("C999", "T1") == settings.collection
    assert settings.feedback_url == f"sqlite:///{tmp_path / 'feedback.db'}"


def test_settings_read_dotenv(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TEAMBOT_MODEL", raising=False)
    (tmp_path / ".env").write_text("TEAMBOT_MODEL=from-dotenv\n")
    assert load_settings().model == "from-dotenv"


def test_dev_model_is_the_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TEAMBOT_MODEL", raising=False)
    assert load_settings().model == DEV_MODEL


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("TEAMBOT_TOP_K", "0", "TEAMBOT_TOP_K"),
        ("TEAMBOT_ALPHA", "1.5", "TEAMBOT_ALPHA"),
        ("TEAMBOT_OLLAMA_URL", "localhost:11434", "must start with http"),
        ("TEAMBOT_CHANNEL_COLLECTIONS", "{not json", "must be a JSON object"),
    ],
)
def test_invalid_settings_are_rejected_clearly(monkeypatch, env, value, fragment):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as excinfo:
        load_settings()
    assert fragment in str(excinfo.value)
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 2
    assert fragment in result.output


def test_secrets_are_never_printed(monkeypatch):
    monkeypatch.setenv("TEAMBOT_SLACK_BOT_TOKEN", "xoxb-very-secret-token")
    monkeypatch.setenv("TEAMBOT_DISCORD_TOKEN", "discord-secret-value")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0
    assert "slack_bot_token" in result.output
    assert "xoxb-very-secret-token" not in result.output
    assert "discord-secret-value" not in result.output
    assert "xoxb-very-secret-token" not in repr(load_settings())


def test_services_status_reports_both_ready(services, monkeypatch):
    monkeypatch.setenv("TEAMBOT_DATA_DIR", str(services.data_dir))
    result = runner.invoke(app, ["services", "status"])
    assert result.exit_code == 0, result.output
    assert "weaviate  ready" in result.output and "ollama    ready" in result.output


def test_status_says_down_for_a_dead_url(monkeypatch, tmp_path):
    monkeypatch.setenv("TEAMBOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TEAMBOT_WEAVIATE_URL", "http://127.0.0.1:9")
    result = runner.invoke(app, ["services", "status"])
    assert result.exit_code == 1
    assert "weaviate  DOWN" in result.output


def test_weaviate_schema_round_trip(services):
    host, port = services.weaviate_host_port
    name = f"RoundTrip_{uuid.uuid4().hex[:8]}"
    with weaviate.connect_to_local(host=host, port=port, grpc_port=services.weaviate_grpc_port,
                                   auth_credentials=weaviate_credentials(services)) as client:
        client.collections.create(
            name, vector_config=Configure.Vectors.self_provided(),
            properties=[Property(name="title", data_type=DataType.TEXT)],
        )
        try:
            col = client.collections.get(name)
            assert [p.name for p in col.config.get().properties] == ["title"]
            col.data.insert({"title": "on-call handbook"}, vector=[1.0, 0.0, 0.0])
            col.data.insert({"title": "expenses"}, vector=[0.0, 1.0, 0.0])
            hits = col.query.near_vector([0.9, 0.1, 0.0], limit=1).objects
            assert hits[0].properties["title"] == "on-call handbook"
        finally:
            client.collections.delete(name)
        assert not client.collections.exists(name)


def test_dev_model_answers_through_the_ollama_client(services):
    client = ollama.Client(host=services.ollama_url)
    assert devmodel.has_model(client, DEV_MODEL)
    shown = client.show(DEV_MODEL)
    assert "<|im_start|>" in shown.template
    assert "<|im_end|>" in (shown.parameters or "")
    reply = client.chat(
        model=DEV_MODEL, messages=[{"role": "user", "content": "Reply with one short greeting."}],
        options={"num_predict": 16},
    )
    assert reply.message.content.strip()
    assert "<|im_end|>" not in reply.message.content



def test_readme_documents_every_setting():
    from pathlib import Path

    from core.settings import Settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [f"TEAMBOT_{name.upper()}" for name in Settings.model_fields if f"`TEAMBOT_{name.upper()}`" not in readme]
    assert not missing, f"README's configuration table lacks {missing} (regenerate: teambot config --markdown)"
