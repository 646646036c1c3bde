"""A bot process, assembled in one place for every platform: the answering service, the feedback
store, the bot with its conversation core, and the /healthz listener; then run until stopped.

The CLI parses options and reports what happens; the listeners live in the platform packages
(bots.slack, bots.discord). A bot that cannot start raises `StartError`, whose message says what
to fix and whose code is the exit status (2: the configuration).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.settings import Settings, secret_value

log = logging.getLogger("teambot.runtime")

Say = Callable[[str], None]


class StartError(RuntimeError):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _health(settings: Settings, service, say: Say) -> None:
    from bots.health import HealthListenerError, start_health_listener

    try:
        server = start_health_listener(settings, service)
    except HealthListenerError as exc:
        raise StartError(str(exc), code=2) from None
    if server is not None:
        say(f"teambot: health at http://{settings.health_host}:{server.server_port}/healthz, metrics at /metrics")


def slack_bot(settings: Settings, service=None, store=None, client=None):
    """The Slack bot: its Bolt app, conversation core and feedback, on the production service and
    store unless given."""
    from slack_bolt.error import BoltError
    from slack_sdk.errors import SlackApiError

    from bots.channel_rules import RulesError
    from bots.slack.app import SlackBot
    from feedback.store import FeedbackStore
    from pipeline.querying import AnswerService

    try:
        return SlackBot(settings, service or AnswerService(settings), store or FeedbackStore.from_settings(settings),
                        client)
    except RulesError as exc:
        raise StartError(f"could not start the Slack bot: {exc}", code=2) from None
    except (BoltError, SlackApiError, OSError) as exc:  # a rejected token, Slack unreachable
        raise StartError(f"could not start the Slack bot: {exc}") from None


def run_slack(settings: Settings, *, http: bool, host: str, say: Say, stop: threading.Event | None = None) -> None:
    """Answer on Slack until interrupted (Ctrl-C or SIGTERM as KeyboardInterrupt, or `stop` in
    Socket Mode): over Socket Mode, or the Events API on TEAMBOT_HTTP_PORT with `http`. The
    answers in progress finish first."""
    from bots.slack.app import EVENTS_PATH, http_server, serve_socket_mode

    bot = slack_bot(settings)
    try:
        _health(settings, bot.service, say)
        if not http:
            say("teambot: Slack Socket Mode (Ctrl-C stops)")
            serve_socket_mode(bot.app, secret_value(settings.slack_app_token), stop)
            return
        try:
            server = http_server(bot.app, host, settings.http_port)
        except OSError as exc:
            raise StartError(f"cannot listen on {host}:{settings.http_port}: {exc.strerror or exc}") from None
        say(f"teambot: Slack HTTP mode at http://{host}:{settings.http_port}{EVENTS_PATH} (Ctrl-C stops)")
        try:
            server.serve_forever()
        finally:
            server.server_close()
    except KeyboardInterrupt:
        say("teambot: stopping after the answers in progress…")
    finally:
        bot.close()


def run_discord(settings: Settings, say: Say) -> None:
    """Connect to Discord and answer until interrupted."""
    import discord

    from bots.channel_rules import RulesError
    from bots.discord.app import DiscordSetupError, TeambotDiscord
    from core.errors import TeambotError
    from feedback.store import FeedbackStore
    from pipeline.querying import AnswerService

    if not secret_value(settings.discord_token):
        raise StartError("TEAMBOT_DISCORD_TOKEN is not set: create a bot at https://discord.com/developers.", code=2)
    try:
        service = AnswerService(settings)
        client = TeambotDiscord(settings, service, FeedbackStore.from_settings(settings))
    except (RulesError, TeambotError) as exc:
        raise StartError(str(exc), code=2) from None
    _health(settings, service, say)
    try:
        # Logging is set up by the caller (core.logging_setup: format, level, secret redaction).
        client.run(secret_value(settings.discord_token), log_handler=None)
    except discord.LoginFailure:
        raise StartError("Discord rejected TEAMBOT_DISCORD_TOKEN: check the bot token.", code=2) from None
    except discord.PrivilegedIntentsRequired:
        raise StartError(
            "Enable the Message Content intent in the Discord developer portal "
            "(your application → Bot → Privileged Gateway Intents).", code=2,
        ) from None
    except DiscordSetupError as exc:
        raise StartError(str(exc), code=2) from None
