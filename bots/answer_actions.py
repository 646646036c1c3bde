"""What people do with an answer, the same on every platform: vote (buttons, reactions, the 👎
form's note), take a reaction's vote back, ask the channel's experts for help, mark that resolved,
share a private answer with the channel, and keep what the experts write in a hand-off's thread.

The platform packages parse the click or reaction and show the outcome; the decisions (who may,
what is stored, which rule applies) and the sentences people read are here, once. Calls are
blocking (the store): Discord makes them through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bots.channel_rules import ChannelRule
from bots.conversation import Conversations
from core import metrics
from core.answer import Answer
from feedback.store import AnswerRecord, FeedbackStore, HandoffRecord, UnknownAnswer

log = logging.getLogger("teambot.answer_actions")

THANKS = "Thanks for the feedback!"
THANKS_NOTE = "Thanks, your note was saved. It helps improve the answers."
OFFER_HANDOFF = "Would you like a person to look at it?"
VOTE_LOST = "I no longer have that answer on record, so the vote was not saved."
STORE_DOWN = "Sorry, your vote could not be saved right now. Please try again shortly."
ANSWER_GONE = "I no longer have that answer on record."
NO_EXPERTS = "No one is set up to take questions in this channel yet; a channel admin can add experts."
ALREADY_WAITING = "The experts were already asked to help with this answer; they will reply here."
HELP_REQUESTED = "I've asked the experts to help; they will reply here."
HANDOFF_FAILED = "Sorry, I couldn't reach the experts right now. Please try again shortly."
NOT_YOURS = "Only the person who asked or the experts who were tagged can mark this resolved."
ALREADY_RESOLVED = "This was already marked resolved."
NOT_YOUR_ANSWER = "Only the person who asked can share this answer."
SHARED = "Shared with the channel. ✅"
SHARE_FAILED = "Sorry, I couldn't share that answer right now. Please try again shortly."
STOPPING = "Stopping your answer."
# An expert's reply often starts by tagging the asker ("<@U0ALICE> it goes in …"; Discord: "<@123>"):
# the draft answer is for whoever asks next.
LEADING_MENTIONS = re.compile(r"^(?:\s*<@!?[A-Za-z0-9]+>[\s,:;-]*)+")
NOTHING_TO_STOP = "You have no answer in progress here."


def is_direct(record: AnswerRecord) -> bool:
    """Was the answer given in a direct message? Recorded since answers carry their audience;
    before, a Slack DM channel id starts with D and a Discord DM has no guild."""
    if record.audience:
        return record.audience == "direct_message"
    return record.workspace is None or record.channel.startswith("D")


@dataclass(frozen=True)
class HelpRequest:
    """A hand-off just opened: post `answer` (as shown) to the experts of `rule` where it was
    given, then call `posted` or `not_posted`."""

    handoff: HandoffRecord
    record: AnswerRecord
    answer: Answer  # as it was shown: question, text, sources
    rule: ChannelRule


@dataclass(frozen=True)
class Shareable:
    record: AnswerRecord
    answer: Answer  # as it was shown
    rule: ChannelRule


class AnswerActions:
    """The actions on one platform's answers (`platform` is what the store records)."""

    def __init__(self, store: FeedbackStore, conversations: Conversations, platform: str, *,
                 can_tag: Callable[[ChannelRule], bool] = lambda rule: rule.has_experts) -> None:
        # can_tag: whether the platform can tag the rule's experts (a Discord channel's rule may
        # name only Slack ids).
        self.store, self.conversations, self.platform, self.can_tag = store, conversations, platform, can_tag

    def rule_of(self, record: AnswerRecord, *where: str | int | None) -> ChannelRule:
        """The rule of the channel an answer was given in (`where`: a more specific place first,
        such as the Discord thread a button was clicked in)."""
        return self.conversations.rule_for(*where, record.channel, record.workspace, direct=is_direct(record))

    def is_mine(self, record: AnswerRecord, user: str) -> bool:
        return record.user_hash == self.store.user_hash(self.platform, user)

    # ------------------------------------------------------------------ votes

    def vote(self, answer_id: str, user: str, value: int) -> str | None:
        """A 👍 (+1) or 👎 (-1) click; None when stored, else what to tell the voter."""
        if problem := self._rate(answer_id, user, value):
            return problem
        metrics.observe_vote(self.platform, value)
        return None

    def note(self, answer_id: str, user: str, reason: str | None, correction: str | None) -> tuple[str, bool]:
        """The 👎 form: (what to tell the user, whether to offer the experts' help). The 👎 itself
        was counted with the click."""
        if problem := self._rate(answer_id, user, -1, reason=reason, correction=correction):
            return problem, False
        record = self.store.get_answer(answer_id)
        offer = bool(reason or correction) and record is not None and self.can_tag(self.rule_of(record))
        return (f"{THANKS_NOTE} {OFFER_HANDOFF}" if offer else THANKS_NOTE), offer

    def react(self, message_id: str, user: str, value: int) -> bool:
        """A 👍/👎 reaction on a message; True if it was on an answer and stored as a vote."""
        answer_id = self.store.answer_for_message(self.platform, message_id)
        if answer_id is None or self._rate(answer_id, user, value):
            return False
        metrics.observe_vote(self.platform, value)
        return True

    def take_back(self, message_id: str, user: str, value: int) -> bool:
        """A 👍/👎 reaction removed: only the vote it cast goes (one changed since stays)."""
        answer_id = self.store.answer_for_message(self.platform, message_id)
        if answer_id is None or not self.store.retract(answer_id, platform=self.platform, user_id=user, value=value):
            return False
        metrics.observe_retraction(self.platform, value)
        return True

    def _rate(self, answer_id: str, user: str, value: int, **note) -> str | None:
        try:
            self.store.rate(answer_id, platform=self.platform, user_id=user, value=value, **note)
        except UnknownAnswer:
            return VOTE_LOST
        except Exception:  # noqa: BLE001 - the voter is told; the bot stays up
            log.exception("could not store a vote on answer %s", answer_id)
            return STORE_DOWN
        return None

    # ------------------------------------------------------------------ people

    def ask_for_help(self, answer_id: str, user: str, *where: str | int | None) -> HelpRequest | str:
        """ "I need more help": a hand-off opened (once per answer), or what to tell the user."""
        record = self.store.get_answer(answer_id)
        answer = self.store.shown_answer(answer_id) if record else None
        if record is None or answer is None:
            return ANSWER_GONE
        rule = self.rule_of(record, *where)
        if not self.can_tag(rule):
            return NO_EXPERTS
        try:
            handoff, opened = self.store.request_handoff(answer_id, platform=self.platform, user_id=user)
        except UnknownAnswer:
            return ANSWER_GONE
        if not opened:
            return ALREADY_WAITING
        return HelpRequest(handoff, record, answer, rule)

    def help_posted(self, request: HelpRequest, message_id: str) -> str:
        self.store.set_handoff_message(request.handoff.id, message_id)
        metrics.observe_handoff(self.platform, "requested")
        return HELP_REQUESTED

    def help_not_posted(self, request: HelpRequest) -> str:
        self.store.cancel_handoff(request.handoff.id)  # so that the next click tries again
        return HANDOFF_FAILED

    def resolve(self, handoff_id: int | None, user: str, groups: Callable[[ChannelRule], frozenset[str]],
                *where: str | int | None) -> HandoffRecord | str:
        """ "Mark resolved", by the asker, whoever asked for help, or an expert of the rule
        (`groups(rule)`: the user's groups among the rule's, asked for only when needed). The
        hand-off, or what to tell the user."""
        handoff = self.store.get_handoff(handoff_id) if handoff_id is not None else None
        record = self.store.get_answer(handoff.answer_id) if handoff else None
        if handoff is None or record is None:
            return ANSWER_GONE
        mine = self.store.user_hash(self.platform, user) in (record.user_hash, handoff.requested_by)
        rule = self.rule_of(record, *where)
        if not mine and not rule.is_expert(user, groups(rule)):
            return NOT_YOURS
        if not self.store.resolve_handoff(handoff.id, platform=self.platform, user_id=user):
            return ALREADY_RESOLVED
        metrics.observe_handoff(self.platform, "resolved")
        return handoff

    def expert_reply(self, channel: str | None, thread: str | None, message_id: str, user: str, text: str,
                     groups: Callable[[ChannelRule], frozenset[str]], *where: str | int | None,
                     posted_at: datetime | None = None) -> bool:
        """A message in a thread: kept if it is an expert's reply to a waiting hand-off there (True:
        it is meant for the asker, not a question for the bot). The asker's own messages, whoever
        asked for help, and people who are not experts of the channel's rule are not kept: only
        an expert's words become a draft answer."""
        text = LEADING_MENTIONS.sub("", text).strip()
        handoff = self.store.handoff_in_thread(self.platform, channel, thread)
        if handoff is None or handoff.resolved_at is not None or not text:
            return False
        record = self.store.get_answer(handoff.answer_id)
        if record is None or self.store.user_hash(self.platform, user) in (record.user_hash, handoff.requested_by):
            return False
        rule = self.rule_of(record, *where)
        if not rule.is_expert(user, groups(rule)):
            return False
        return self.store.add_expert_reply(handoff.id, platform=self.platform, message_id=message_id, user_id=user,
                                           text=text, posted_at=posted_at)

    def people_answering(self, channel: str | None, thread: str | None) -> bool:
        """Whether a hand-off waits in this thread: its messages are then for the people helping,
        and the bot answers there only when it is mentioned."""
        handoff = self.store.handoff_in_thread(self.platform, channel, thread)
        return handoff is not None and handoff.resolved_at is None

    def expert_reply_changed(self, message_id: str, text: str | None) -> bool:
        """A kept reply edited (`text`) or deleted (None): the draft follows until it is reviewed."""
        text = (LEADING_MENTIONS.sub("", text).strip() or None) if text is not None else None  # emptied: gone
        return self.store.edit_expert_reply(self.platform, message_id, text)

    def shareable(self, answer_id: str, user: str, *where: str | int | None) -> Shareable | str:
        """A private answer its asker shares with the channel, or what to tell the user. After
        posting it, `shared` moves its votes there."""
        record = self.store.get_answer(answer_id)
        answer = self.store.shown_answer(answer_id) if record else None
        if record is None or answer is None:
            return ANSWER_GONE
        if not self.is_mine(record, user):
            return NOT_YOUR_ANSWER
        return Shareable(record, answer, self.rule_of(record, *where))

    def shared(self, answer_id: str, message_ids: list[str]) -> None:
        # Reactions and buttons on any part of the shared copy are about this answer.
        self.store.set_message_id(answer_id, message_ids[-1], parts=message_ids[:-1])
