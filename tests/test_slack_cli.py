"""The CLI verbs that came with the Slack adapter: `teambot slack` and `teambot feedback stats`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from core.answer import Answer
from feedback.store import FeedbackStore
from teambot.cli import app

runner = CliRunner()
NO_SLACK = {"TEAMBOT_SLACK_BOT_TOKEN": "", "TEAMBOT_SLACK_APP_TOKEN": "", "TEAMBOT_SLACK_SIGNING_SECRET": ""}


def test_slack_names_the_settings_it_is_missing(tmp_path):
    env = {**NO_SLACK, "TEAMBOT_DATA_DIR": str(tmp_path)}
    socket_mode = runner.invoke(app, ["slack"], env=env)
    assert socket_mode.exit_code == 2
    assert "TEAMBOT_SLACK_BOT_TOKEN and TEAMBOT_SLACK_APP_TOKEN" in socket_mode.output

    http = runner.invoke(app, ["slack", "--http"], env={**env, "TEAMBOT_SLACK_BOT_TOKEN": "xoxb-1"})
    assert http.exit_code == 2
    assert "needs TEAMBOT_SLACK_SIGNING_SECRET" in http.output and "BOT_TOKEN" not in http.output


def _record(store: FeedbackStore, model: str, votes: list[int]) -> str:
    answer = Answer(question="Which tool do expense claims go in?", text="Ledgerly [1].", sources=[],
                    model=model, collection="Handbook")
    store.record_answer(answer, platform="slack", user_id="U0ALICE", channel="C0GENERAL")
    for n, value in enumerate(votes):
        store.rate(answer.id, platform="slack", user_id=f"U{n}", value=value)
    return answer.id


def test_feedback_stats_prints_answers_and_votes_by_model(tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    env = {"TEAMBOT_DATA_DIR": str(tmp_path), "TEAMBOT_FEEDBACK_DB_URL": url}
    assert runner.invoke(app, ["feedback", "stats"], env=env).stdout.strip() == "No answers recorded yet."

    store = FeedbackStore(url)
    _record(store, "teambot-dev", [1, 1, -1])
    _record(store, "teambot-dev", [])
    changed = _record(store, "teambot-ft-1", [-1])
    store.rate(changed, platform="slack", user_id="U0", value=1)  # a changed vote counts as its last value

    result = runner.invoke(app, ["feedback", "stats"], env=env)
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert rows == [["teambot-dev", "2", "2", "1"], ["teambot-ft-1", "1", "1", "0"], ["total", "3", "3", "1"]]

    # Hand-offs to people: asked, resolved, still waiting.
    for n, answer_id in enumerate([changed, _record(store, "teambot-dev", [])]):
        handoff, _ = store.request_handoff(answer_id, platform="slack", user_id=f"U{n}")
    store.resolve_handoff(handoff.id, platform="slack", user_id="U0MARIA")
    result = runner.invoke(app, ["feedback", "stats"], env=env)
    assert "hand-offs to people: 2 asked, 1 resolved, 1 waiting (median 0.0 min to resolve)" in result.output

    as_json = json.loads(runner.invoke(app, ["feedback", "stats", "--json"], env=env).output)
    assert as_json["models"] == [
        {"model": "teambot-dev", "answers": 3, "up": 2, "down": 1},
        {"model": "teambot-ft-1", "answers": 1, "up": 1, "down": 0},
    ]
    assert as_json["handoffs"] == {"requested": 2, "resolved": 1, "waiting": 1,
                                   "median_minutes_to_resolve": as_json["handoffs"]["median_minutes_to_resolve"]}


def test_rules_checks_a_rules_file_and_a_bot_will_not_start_on_a_bad_one(tmp_path):
    from tests.conftest import ROOT

    result = runner.invoke(app, ["rules", str(ROOT / "examples" / "channel-rules.toml")])
    assert result.exit_code == 0, result.output
    assert "C0FINANCE: allowed_groups=('S0FINANCE',), citations_required=True, private=True" in result.output

    bad = tmp_path / "rules.toml"
    bad.write_text('[channels.C0HELP]\nrespond_to = "everything"\n')
    result = runner.invoke(app, ["rules", str(bad)])
    assert result.exit_code == 2 and 'channels."C0HELP"' in result.output and "respond_to" in result.output
    env = {"TEAMBOT_DATA_DIR": str(tmp_path), "TEAMBOT_CHANNEL_RULES": str(bad), "TEAMBOT_SLACK_BOT_TOKEN": "xoxb-1",
           "TEAMBOT_SLACK_APP_TOKEN": "xapp-1", "TEAMBOT_HEALTH_PORT": "0"}
    started = runner.invoke(app, ["slack"], env=env)
    assert started.exit_code == 2 and "respond_to" in started.output


def test_the_slack_manifest_asks_for_exactly_what_the_bot_uses():
    import yaml

    from tests.conftest import ROOT

    manifest = yaml.safe_load((ROOT / "docker" / "slack-manifest.yaml").read_text())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "app_mentions:read", "assistant:write", "channels:history", "channels:read", "groups:history", "groups:read",
        "chat:write", "commands",
        "im:history", "reactions:read", "usergroups:read",
    }
    assert set(manifest["settings"]["event_subscriptions"]["bot_events"]) == {
        "agent_session_stopped", "app_home_opened", "app_mention", "message.channels", "message.groups", "message.im",
        "reaction_added", "reaction_removed",
    }
    # Slack's current agent surface (assistant_view is being retired), with prompts to start from.
    assert "assistant_view" not in manifest["features"]
    prompts = manifest["features"]["agent_view"]["suggested_prompts"]
    assert 0 < len(prompts) <= 4 and all(p["title"] and p["message"] for p in prompts)
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/ask"]
    assert manifest["settings"]["interactivity"]["is_enabled"] and manifest["settings"]["socket_mode_enabled"]
    assert manifest["features"]["app_home"]["messages_tab_enabled"]  # people can DM the bot


def test_sigterm_stops_a_bot_the_way_ctrl_c_does():
    """`docker stop` sends SIGTERM: the bot commands turn it into the KeyboardInterrupt that makes
    them finish the answers in progress (and close the Discord client) before exiting."""
    script = (
        "import os, signal, time\n"
        "from teambot.cli import _stop_on_sigterm\n"
        "_stop_on_sigterm()\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "except KeyboardInterrupt:\n"
        "    print('finishing the answers in progress')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0 and done.stdout.strip() == "finishing the answers in progress", done.stderr


def test_a_health_port_in_use_is_named_with_the_setting_that_moves_it(settings):
    """Two bots on one host both default to port 9100: the second says which setting to change."""
    import socket

    import pytest

    from bots.health import HealthListenerError, start_health_listener

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = settings.model_copy(update={"health_host": "127.0.0.1", "health_port": port})
        with pytest.raises(HealthListenerError, match=rf"127\.0\.0\.1:{port} .*TEAMBOT_HEALTH_PORT"):
            start_health_listener(busy)
