"""👍/👎 on Slack: the feedback buttons under an answer (and the vote buttons of answers posted
before them), the "what went wrong?" form a 👎 opens, and 👍/👎 reactions (removing one takes
back the vote it cast, unless the user has voted differently since)."""

from __future__ import annotations

import logging
import re

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bots.answer_actions import THANKS, AnswerActions
from bots.slack.blocks import (
    FEEDBACK, FEEDBACK_MODAL, LEGACY_VOTE_DOWN, LEGACY_VOTE_UP, feedback_from_view, feedback_modal, handoff_block,
    vote_of,
)
from bots.slack.reply import ephemeral

log = logging.getLogger("teambot.slack")

REACTION_VOTES = {"+1": 1, "thumbsup": 1, "-1": -1, "thumbsdown": -1}


class SlackFeedback:
    def __init__(self, actions: AnswerActions) -> None:
        self.actions = actions

    def register(self, app: App) -> None:
        app.action(FEEDBACK)(self._on_feedback_button)
        app.action(re.compile(f"^({LEGACY_VOTE_UP}|{LEGACY_VOTE_DOWN})$"))(self._on_legacy_vote)
        app.view(FEEDBACK_MODAL)(self._on_feedback_submitted)
        app.event("reaction_added")(self._on_reaction)
        app.event("reaction_removed")(self._on_reaction_removed)

    def _on_feedback_button(self, ack, body: dict, action: dict, client: WebClient) -> None:
        ack()
        if vote := vote_of(action.get("value") or ""):
            self._vote(body, *vote, client)
        else:
            log.warning("a feedback button with an unknown value: %r", action.get("value"))

    def _on_legacy_vote(self, ack, body: dict, action: dict, client: WebClient) -> None:
        ack()  # the 👍/👎 buttons of answers posted before feedback_buttons
        self._vote(body, action["value"], 1 if action["action_id"] == LEGACY_VOTE_UP else -1, client)

    def _vote(self, body: dict, answer_id: str, value: int, client: WebClient) -> None:
        user, channel = body["user"]["id"], (body.get("channel") or {}).get("id")
        message = body.get("message") or {}
        thread = message.get("thread_ts") or message.get("ts")
        # The form first: its trigger_id expires 3 s after the click, however slow the database is.
        # The 👎 is stored below either way; the form only adds a reason or a better answer.
        form_open = value < 0 and _open_feedback_form(client, body["trigger_id"], answer_id, channel, thread)
        problem = self.actions.vote(answer_id, user, value)
        if problem or not form_open:
            ephemeral(client, channel, user, thread, problem or THANKS)

    def _on_feedback_submitted(self, ack, body: dict, view: dict, client: WebClient) -> None:
        ack()
        meta, reason, correction = feedback_from_view(view)
        if not meta.get("answer") or not (reason or correction):
            return  # the 👎 was stored with the click; an empty form adds nothing
        text, offer = self.actions.note(meta["answer"], body["user"]["id"], reason, correction)
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}},
                  handoff_block(meta["answer"])] if offer else None
        ephemeral(client, meta.get("channel"), body["user"]["id"], meta.get("thread"), text, blocks)

    def _on_reaction(self, event: dict) -> None:
        if vote := _reaction_vote(event):
            self.actions.react(*vote)

    def _on_reaction_removed(self, event: dict) -> None:
        if vote := _reaction_vote(event):
            self.actions.take_back(*vote)


def _open_feedback_form(client: WebClient, trigger_id: str, answer_id: str, channel, thread) -> bool:
    try:
        client.views_open(trigger_id=trigger_id, view=feedback_modal(answer_id, channel, thread))
        return True
    except SlackApiError as exc:
        log.warning("could not open the feedback form: %s", exc.response.get("error"))
        return False


def _reaction_vote(event: dict) -> tuple[str, str, int] | None:
    """(message ts, user, +1/-1) for a 👍/👎 reaction on a message; `reaction_added` and
    `reaction_removed` events have the same shape."""
    item = event.get("item") or {}
    value = REACTION_VOTES.get((event.get("reaction") or "").split("::")[0])  # "+1::skin-tone-2"
    if value is None or item.get("type") != "message" or not event.get("user") or not item.get("ts"):
        return None
    return item["ts"], event["user"], value
