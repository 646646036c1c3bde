"""Slack bot under load: concurrent signed mentions over HTTP, acknowledgement latency, time to
the first visible words, Slack API calls per answer, answers delivered.

    python -m bench.bot_load [--mentions 20] [--tokens 48] [--scripted]

The real `SlackBot` (Bolt, HTTP mode, `bots.slack.app.http_server`) answers with the real
AnswerService over a scratch collection of the sample handbook, or with `--scripted` a model
stand-in that streams a 600-character answer at 80 characters a second to every question at once
(it isolates what the Slack side costs). The Slack Web API is the strict stand-in of the tests
(testing/slack_standin.py), with Slack's per-method rate limits (429 + Retry-After). `--mentions`
signed `app_mention` events are sent at once, each from another user and its own thread. Slack
wants every request acknowledged within 3 s. Reported: ack p50/p99, time from the mention to the
first words of the answer shown in Slack, API calls and 429s per answer, answers delivered with
their feedback buttons. The same script runs against an older checkout (placeholder + chat.update)
for the old-path row of the README. Raw: a bare slack_bolt `App` with an `app_mention` listener
that posts one reply, for the acknowledgement latency of Bolt itself.
Needs the real Weaviate and Ollama unless `--scripted`.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from pydantic import SecretStr

from bench.harness import ROOT, drop_collections, load, percentile, ratio, scratch_name, table, write_result
from testing import slack_standin as slack

HANDBOOK = ROOT / "examples" / "handbook"
QA = json.loads((ROOT / "bench" / "qa_set.json").read_text())
SECRET = "bench-signing-secret-0123456789abcdef"
ACK_LIMIT = 3.0  # seconds Slack waits for an acknowledgement before it retries


def serve(app) -> tuple[str, callable]:
    """Serve a Bolt app like `teambot slack --http`; (events URL, stop function)."""
    from bots.slack.app import EVENTS_PATH, http_server

    server = http_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return f"http://127.0.0.1:{server.server_port}{EVENTS_PATH}", stop


def burst(url: str, events: list[dict]) -> list[dict]:
    """Send every event at the same moment, each on its own connection; per-request outcome."""
    start = threading.Barrier(len(events))

    def send(event: dict) -> dict:
        body = slack.event_body(event)
        start.wait()
        sent = time.perf_counter()
        try:
            response = httpx.post(url, content=body, headers=slack.signed(SECRET, body, "application/json"), timeout=30)
            status = response.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__  # refused or reset: Slack would redeliver later
        return {"ts": event["ts"], "channel": event["channel"], "sent": sent,
                "ack_s": time.perf_counter() - sent, "status": status}

    with ThreadPoolExecutor(len(events)) as pool:
        return list(pool.map(send, events))


def acked(sent: list[dict]) -> int:
    return sum(s["status"] == 200 for s in sent)


def settle(done, timeout: float) -> bool:
    """Wait until `done()` or the timeout; what did not arrive by then is counted as missing."""
    deadline = time.monotonic() + timeout
    while not (ok := done()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return ok


def mentions(count: int, channel: str) -> list[dict]:
    # One question per person: the bot's per-user limit (10 a minute) would refuse a burst from one.
    questions = [q for q, _ in QA["answerable"]]
    return [slack.mention(questions[i % len(questions)], channel=channel, user=f"U0BENCH{i:04d}") for i in range(count)]


def ack_stats(sent: list[dict]) -> dict:
    acks = [s["ack_s"] for s in sent if s["status"] == 200]
    return {"ack_p50_s": percentile(acks, 50), "ack_p99_s": percentile(acks, 99), "ack_max_s": max(acks, default=math.nan),
            "non_200": len(sent) - len(acks), "failures": sorted(str(s["status"]) for s in sent if s["status"] != 200)}


def raw_round(standin, count: int, channel: str) -> dict:
    from slack_bolt import App
    from slack_sdk import WebClient

    app = App(client=WebClient(token=slack.BOT_TOKEN, base_url=standin.api_url), signing_secret=SECRET)

    @app.event("app_mention")
    def reply(event, client) -> None:
        client.chat_postMessage(channel=event["channel"], thread_ts=event["ts"], text="ok")

    url, stop = serve(app)
    try:
        sent = burst(url, mentions(count, channel))
        threads = {s["ts"] for s in sent}

        def replied() -> int:
            return len({c.args.get("thread_ts") for c in standin.find("chat.postMessage", channel=channel)} & threads)

        settle(lambda: replied() >= acked(sent), 60)
        delivered = replied()
    finally:
        stop()
    return {**ack_stats(sent), "delivered": delivered, "sent": count}


def _shows_words(call) -> bool:
    """A call that puts answer text in front of the user: a stream's first chunk, or (old path)
    an edit of the placeholder."""
    if call.status != 200 or not call.response.get("ok"):
        return False
    if call.method in ("chat.startStream", "chat.appendStream", "chat.stopStream"):
        return any(c.get("text", "").strip() for c in call.args.get("chunks") or []) or bool(call.args.get("markdown_text"))
    return call.method == "chat.update" or (call.method == "chat.postMessage" and "blocks" in call.args)


def _delivered(call) -> bool:
    """The answer's last message, with its 👍/👎 (feedback_buttons now, an actions block before)."""
    if call.status != 200 or not call.response.get("ok"):
        return False
    kinds = {b.get("type") for b in call.args.get("blocks") or []}
    return bool(kinds & {"context_actions", "actions"})


def ours_round(standin, settings, service, store, count: int, channel: str, timeout: float) -> dict:
    from slack_sdk import WebClient

    from bots.slack.app import SlackBot

    bot = SlackBot(settings, service, store, WebClient(token=slack.BOT_TOKEN, base_url=standin.api_url))
    url, stop = serve(bot.app)
    try:
        sent = burst(url, mentions(count, channel))
        settle(lambda: sum(map(_delivered, standin.find_all(channel))) >= acked(sent), timeout)
        bot.conversations.wait_idle(timeout)
    finally:
        stop()
        bot.close()
    calls = standin.find_all(channel)
    thread_of = {c.response["ts"]: c.args.get("thread_ts") for c in calls  # a message → the question it answers
                 if c.method in ("chat.postMessage", "chat.startStream") and c.response.get("ts")}
    first_words: dict[str, float] = {}
    for call in calls:
        thread = call.args.get("thread_ts") or thread_of.get(call.args.get("ts"))
        if thread and _shows_words(call):
            first_words.setdefault(thread, call.at)
    delivered = sum(map(_delivered, calls))
    to_words = [first_words[s["ts"]] - s["sent"] for s in sent if s["ts"] in first_words]
    return {
        **ack_stats(sent), "sent": count, "delivered": delivered, "missing": count - delivered,
        "first_words_p50_s": percentile(to_words, 50), "first_words_p99_s": percentile(to_words, 99),
        "calls_per_question": len(calls) / count,
        "ratelimited_per_question": sum(c.status == 429 for c in calls) / count,
        "methods": sorted({c.method for c in calls}),
    }


ANSWER = ("Expense claims go in **Ledgerly** within 30 days of purchase [1]. Attach the receipt as a PDF or a photo; "
          "claims over 500 EUR also need your manager's approval in Ledgerly before finance pays them. Card "
          "payments reconcile automatically, cash receipts need the paper original in the finance tray. "
          "Refunds arrive with the next payroll run. Questions go to #finance-help. ") * 2


def run(count: int, tokens: int, timeout: float, scripted: bool = False) -> dict:
    from feedback.store import FeedbackStore
    from pipeline.indexing import Indexer
    from pipeline.querying import AnswerService
    from core.settings import load_settings

    name = scratch_name("BotLoad")
    with tempfile.TemporaryDirectory(prefix="teambot-bench-") as tmp:
        settings = load_settings(
            data_dir=Path(tmp), feedback_db_url=f"sqlite:///{tmp}/feedback.db", max_answer_tokens=tokens,
            collection=name, slack_signing_secret=SecretStr(SECRET), slack_bot_token=SecretStr(slack.BOT_TOKEN),
        )
        standin = slack.SlackStandIn().start()
        try:
            if scripted:
                from testing.doubles import ScriptedAnswers

                settings = settings.model_copy(update={"answer_workers": count})
                service = ScriptedAnswers(settings, ANSWER, piece_chars=4, delay=0.05)
            else:
                Indexer(settings, name).ingest([HANDBOOK])
                service = AnswerService(settings)
            store = FeedbackStore.from_settings(settings)
            load_before = load()
            raw = raw_round(standin, count, "C0BENCHRAW")
            ours = ours_round(standin, settings, service, store, count, "C0BENCHOURS", timeout)
            load_after = load()
            if not scripted:
                service.close()
        finally:
            standin.stop()
            if not scripted:
                drop_collections(settings, [name])
    return {
        "mentions": count, "max_answer_tokens": tokens, "scripted": scripted, "ack_limit_s": ACK_LIMIT,
        "ours": ours, "raw": raw,
        "ratio_ack_p50": ratio(ours["ack_p50_s"], raw["ack_p50_s"]),
        "ratio_ack_p99": ratio(ours["ack_p99_s"], raw["ack_p99_s"]),
        "acks_within_limit": ours["non_200"] == 0 and ours["ack_max_s"] < ACK_LIMIT,
        "load_before": load_before, "load_after": load_after,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mentions", type=int, default=20, help="Concurrent mentions in the burst.")
    parser.add_argument("--tokens", type=int, default=48, help="max_answer_tokens of the answering service.")
    parser.add_argument("--timeout", type=float, default=900, help="Seconds to wait for all answers.")
    parser.add_argument("--scripted", action="store_true", help="A scripted model: no Weaviate or Ollama needed.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.mentions < 1:
        parser.error("--mentions must be at least 1")
    result = run(args.mentions, args.tokens, args.timeout, args.scripted)
    ours, raw = result["ours"], result["raw"]
    print(f"slack HTTP mode: {args.mentions} concurrent mentions, load {result['load_before']} → {result['load_after']}")
    print(table(
        ["path", "ack p50 s", "ack p99 s", "non-200", "first words p50 s", "first words p99 s", "calls/question",
         "429s/question", "delivered"],
        [["ours (SlackBot)", ours["ack_p50_s"], ours["ack_p99_s"], ours["non_200"], ours["first_words_p50_s"],
          ours["first_words_p99_s"], ours["calls_per_question"], ours["ratelimited_per_question"],
          f"{ours['delivered']}/{ours['sent']}"],
         ["raw (bare Bolt App)", raw["ack_p50_s"], raw["ack_p99_s"], raw["non_200"], "", "", "", "",
          f"{raw['delivered']}/{raw['sent']}"],
         ["ratio ours/raw", result["ratio_ack_p50"], result["ratio_ack_p99"], "", "", "", "", "", ""]],
    ))
    print("Slack methods used: " + ", ".join(ours["methods"]))
    print(f"every ack within {ACK_LIMIT:.0f}s: {'yes' if result['acks_within_limit'] else 'NO'}")
    write_result("bot_load", result, args.out)
    return result


if __name__ == "__main__":
    main()
