"""Slack bot under load: concurrent signed mentions over HTTP, acknowledgement latency and answers.

    python -m bench.bot_load [--mentions 20] [--tokens 48]

The real `SlackBot` (Bolt, HTTP mode, `bots.slack_app.http_server`) answers with the real
AnswerService over a scratch collection of the sample handbook; the Slack Web API is the local
stand-in of the tests (tests/slack_standin.py). `--mentions` signed `app_mention` events are
sent at once, each from another user and its own thread. Slack wants every request acknowledged within 3 s;
we report ack latency p50/p99, answers delivered (the placeholder edited into the final
answer with blocks), answer latency, and errors (non-200 acks, error replies, no answer).
Raw: a bare slack_bolt `App` with an `app_mention` listener that posts one reply, served the
same way and sent the same burst, for the acknowledgement latency of Bolt itself.
Needs the real Weaviate and Ollama.
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
from tests import slack_standin as slack

HANDBOOK = ROOT / "examples" / "handbook"
QA = json.loads((ROOT / "bench" / "qa_set.json").read_text())
SECRET = "bench-signing-secret-0123456789abcdef"
ACK_LIMIT = 3.0  # seconds Slack waits for an acknowledgement before it retries


def serve(app) -> tuple[str, callable]:
    """Serve a Bolt app like `teambot slack --http`; (events URL, stop function)."""
    from bots.slack_app import EVENTS_PATH, http_server

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


def ours_round(standin, settings, service, store, count: int, channel: str, timeout: float) -> dict:
    from slack_sdk import WebClient

    from bots.slack_app import SlackBot
    from bots.slack_blocks import PLACEHOLDER, STREAMING_MARK

    finals: dict[str, float] = {}  # placeholder ts → when its final edit arrived

    def on_update(args: dict) -> None:
        if args.get("channel") == channel and ("blocks" in args or STREAMING_MARK not in args.get("text", "")):
            finals.setdefault(args["ts"], time.perf_counter())

    standin.hooks["chat.update"] = on_update
    bot = SlackBot(settings, service, store, WebClient(token=slack.BOT_TOKEN, base_url=standin.api_url))
    url, stop = serve(bot.app)
    try:
        sent = burst(url, mentions(count, channel))

        def placeholders() -> dict[str, str]:
            return {c.args.get("thread_ts"): c.response.get("ts")
                    for c in standin.find("chat.postMessage", channel=channel, text=PLACEHOLDER)}

        settle(lambda: len(placeholders()) >= acked(sent), 60)
        by_thread = placeholders()
        settle(lambda: all(ts in finals for ts in by_thread.values()), timeout)
    finally:
        stop()
        bot.close()
        standin.hooks.pop("chat.update", None)
    answered, error_replies, latencies = 0, 0, []
    for s in sent:
        placeholder = by_thread.get(s["ts"])
        if placeholder not in finals:
            continue
        final = standin.find("chat.update", channel=channel, ts=placeholder, where=lambda c: "blocks" in c.args)
        if final:
            answered += 1
            latencies.append(finals[placeholder] - s["sent"])
        else:
            error_replies += 1
    return {
        **ack_stats(sent), "sent": count, "delivered": answered, "error_replies": error_replies,
        "missing": count - answered - error_replies,
        "answer_p50_s": percentile(latencies, 50), "answer_p99_s": percentile(latencies, 99),
    }


def run(count: int, tokens: int, timeout: float) -> dict:
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
            Indexer(settings, name).ingest([HANDBOOK])
            service = AnswerService(settings)
            store = FeedbackStore.from_settings(settings)
            load_before = load()
            raw = raw_round(standin, count, "C0BENCHRAW")
            ours = ours_round(standin, settings, service, store, count, "C0BENCHOURS", timeout)
            load_after = load()
            service.close()
        finally:
            standin.stop()
            drop_collections(settings, [name])
    return {
        "mentions": count, "max_answer_tokens": tokens, "ack_limit_s": ACK_LIMIT, "ours": ours, "raw": raw,
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
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.mentions < 1:
        parser.error("--mentions must be at least 1")
    result = run(args.mentions, args.tokens, args.timeout)
    ours, raw = result["ours"], result["raw"]
    print(f"slack HTTP mode: {args.mentions} concurrent mentions, load {result['load_before']} → {result['load_after']}")
    print(table(
        ["path", "ack p50 s", "ack p99 s", "non-200", "delivered", "errors", "answer p50 s", "answer p99 s"],
        [["ours (SlackBot + AnswerService)", ours["ack_p50_s"], ours["ack_p99_s"], ours["non_200"],
          f"{ours['delivered']}/{ours['sent']}", ours["error_replies"] + ours["missing"],
          ours["answer_p50_s"], ours["answer_p99_s"]],
         ["raw (bare Bolt App)", raw["ack_p50_s"], raw["ack_p99_s"], raw["non_200"],
          f"{raw['delivered']}/{raw['sent']}", "", "", ""],
         ["ratio ours/raw", result["ratio_ack_p50"], result["ratio_ack_p99"], "", "", "", "", ""]],
    ))
    print(f"every ack within {ACK_LIMIT:.0f}s: {'yes' if result['acks_within_limit'] else 'NO'}")
    write_result("bot_load", result, args.out)
    return result


if __name__ == "__main__":
    main()
