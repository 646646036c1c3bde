"""Handing an answer on, on Slack: "I need more help" tags the channel's experts in the answer's
thread (once per answer), "Mark resolved" on that message (for the asker and the experts) says who
resolved it, and "Share with the channel" under a private answer posts it for everyone, with its
buttons."""

from __future__ import annotations

import logging

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bots.answer_actions import AnswerActions, HelpRequest
from bots.slack.blocks import HANDOFF, RESOLVE, SHARE, answer_tail, escape, handoff_message, markdown_messages, resolved_blocks
from bots.slack.directory import SlackDirectory
from bots.slack.reply import ephemeral

log = logging.getLogger("teambot.slack")


class SlackHandoff:
    def __init__(self, actions: AnswerActions, directory: SlackDirectory) -> None:
        self.actions, self.directory = actions, directory

    def register(self, app: App) -> None:
        app.action(HANDOFF)(self._on_handoff)
        app.action(RESOLVE)(self._on_resolve)
        app.action(SHARE)(self._on_share)

    def _on_handoff(self, ack, body: dict, action: dict, client: WebClient) -> None:
        ack()
        user, channel = body["user"]["id"], (body.get("channel") or {}).get("id")
        request = self.actions.ask_for_help(action.get("value") or "", user)
        if isinstance(request, str):
            ephemeral(client, channel, user, (body.get("message") or {}).get("thread_ts"), request)
            return
        ephemeral(client, request.record.channel, user, request.record.thread or None, self._post(client, request, user))

    def _post(self, client: WebClient, request: HelpRequest, user: str) -> str:
        record, rule = request.record, request.rule
        text, blocks = handoff_message(request.answer, asker=user, users=rule.expert_users, groups=rule.expert_groups,
                                       handoff_id=request.handoff.id)
        try:
            posted = client.chat_postMessage(channel=record.channel, thread_ts=record.thread or None, text=text,
                                             blocks=blocks)
        except SlackApiError as exc:
            log.error("could not ask the experts in %s: %s", record.channel, exc.response.get("error"))
            return self.actions.help_not_posted(request)
        return self.actions.help_posted(request, posted["ts"])

    def _on_resolve(self, ack, body: dict, action: dict, client: WebClient) -> None:
        ack()
        user, channel = body["user"]["id"], (body.get("channel") or {}).get("id")
        message, value = body.get("message") or {}, action.get("value") or ""
        resolved = self.actions.resolve(int(value) if value.isdigit() else None, user,
                                        lambda rule: self.directory.groups_of(client, user, rule.expert_groups))
        if isinstance(resolved, str):
            ephemeral(client, channel, user, message.get("thread_ts"), resolved)
            return
        try:
            client.chat_update(channel=channel, ts=message.get("ts") or resolved.message_id,
                               text=f"Resolved by <@{user}>.", blocks=resolved_blocks(message.get("blocks") or [], user))
        except SlackApiError as exc:
            log.warning("could not mark the hand-off message resolved: %s", exc.response.get("error"))

    def _on_share(self, ack, body: dict, action: dict, client: WebClient, respond) -> None:
        ack()
        user = body["user"]["id"]
        shareable = self.actions.shareable(action.get("value") or "", user)
        if isinstance(shareable, str):
            respond(text=shareable, response_type="ephemeral", replace_original=False)
            return
        record, answer = shareable.record, shareable.answer
        shared = f"<@{user}> shared an answer to: {escape(' '.join(answer.question.split())[:500])}"
        ts = []
        for i, (text, blocks) in enumerate(markdown_messages(
                answer.text.strip(), answer_tail(answer, votes=True, handoff=shareable.rule.has_experts))):
            if i == 0:
                blocks = [{"type": "context", "elements": [{"type": "mrkdwn", "text": shared}]}, *blocks]
            ts.append(client.chat_postMessage(channel=record.channel, thread_ts=record.thread or None, text=text,
                                              blocks=blocks)["ts"])
        self.actions.shared(record.id, ts)
        respond(delete_original=True)  # the private copy; the shared one carries the votes now
