"""Discord bot under load: a burst of questions, and vote clicks while they are being answered.

    python -m bench.discord_load [--questions 20] [--clicks 10] [--tokens 48]

The real `TeambotDiscord` (discord.py, the shared conversation core) answers with the real
AnswerService over a scratch collection of the sample handbook; Discord is the strict local
stand-in of the tests (testing/discord_standin.py), which drops an interaction not answered
within 3 s. `--questions` mentions arrive at once; while they are answered (a few generations
at a time, the rest queued), a user clicks 👍 on an earlier answer every 0.4 s, `--clicks`
times. Reported: how long each click waited for its interaction response (Discord's limit is
3 s), how many clicks Discord refused, the answers delivered and their latency. Needs the real
Weaviate and Ollama.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from bench.harness import ROOT, drop_collections, load, percentile, scratch_name, table, write_result

HANDBOOK = ROOT / "examples" / "handbook"
QA = json.loads((ROOT / "bench" / "qa_set.json").read_text())
INTERACTION_DEADLINE = 3.0


async def scenario(settings, service, store, questions: int, clicks: int) -> dict:
    from bots.discord.app import TeambotDiscord
    from core.answer import Answer
    from testing.discord_standin import DiscordStandIn, logged_in, settle, user_payload

    # An answer to vote on, as the bot would have posted it earlier.
    earlier = Answer(question="Which tool do expense claims go in?", text="Ledgerly [1].", sources=[],
                     model=settings.model, collection=settings.collection)
    store.record_answer(earlier, platform="discord", user_id="1")
    standin = DiscordStandIn()
    bot = TeambotDiscord(settings, service, store)
    async with logged_in(bot, standin):
        buttons = [{"type": 2, "style": 2, "label": label, "custom_id": f"teambot:vote:{value}:{earlier.id}"}
                   for label, value in (("Helpful", "up"), ("Not helpful", "down"))]
        voted_on = standin.message_payload(standin.snowflake(), standin.channel_id, standin.bot_user, "Ledgerly [1].",
                                           components=[{"type": 1, "components": buttons}])
        standin.messages[int(voted_on["id"])] = voted_on
        store.set_message_id(earlier.id, voted_on["id"])
        started = time.monotonic()
        asked = []
        for n in range(questions):
            text = QA["answerable"][n % len(QA["answerable"])][0]
            message = standin.message_create(f"{standin.mention()} {text}", mentions_bot=True,
                                             author=user_payload(3000000000000000000 + n, f"asker{n}"))
            asked.append(int(message["id"]))
            bot._connection.parse_message_create(message)
        await asyncio.sleep(0.2)
        tokens = []
        for k in range(clicks):
            click = standin.button_click(voted_on, f"teambot:vote:up:{earlier.id}",
                                         user=user_payload(4000000000000000000 + k, f"voter{k}"))
            tokens.append(click["token"])
            bot._connection.parse_interaction_create(click)
            await asyncio.sleep(0.4)
        # Only a hang guard: 10 questions took up to 264 s on a loaded 2-core machine; twice that, at least.
        await settle(timeout=max(300.0, 60.0 * questions))
        seconds = time.monotonic() - started
        replies = [m for m in standin.bot_messages() if m.get("message_reference", {}).get("message_id")]
        answered_at = {}
        for request in standin.requests:  # the message that carries the votes is the answer's last
            if request.method in ("POST", "PATCH") and "components" in (request.body or {}) and request.body["components"]:
                answered_at.setdefault(len(answered_at), request.at)
        waits = [standin.interactions[t]["answered_after"] for t in tokens]
        return {
            "questions": questions, "clicks": clicks, "seconds": seconds,
            "click_waits": [w for w in waits if w is not None], "clicks_unanswered": sum(w is None for w in waits),
            "refused": standin.refused, "limited": standin.limited,
            "answers_delivered": len({m["message_reference"]["message_id"] for m in replies}),
            "votes_stored": sum(1 for r in store.ratings(earlier.id) if r.value == 1),
        }


def run(questions: int, clicks: int, tokens: int) -> dict:
    from core.settings import load_settings
    from feedback.store import FeedbackStore
    from pipeline.indexing import Indexer
    from pipeline.querying import AnswerService

    name = scratch_name("DiscordLoad")
    with tempfile.TemporaryDirectory(prefix="teambot-bench-") as tmp:
        settings = load_settings(
            data_dir=Path(tmp), feedback_db_url=f"sqlite:///{tmp}/feedback.db", max_answer_tokens=tokens,
            collection=name, user_questions_per_minute=0, channel_questions_per_minute=0,
            answer_queue=max(16, questions),
        )
        try:
            Indexer(settings, name).ingest([HANDBOOK])
            service = AnswerService(settings)
            store = FeedbackStore.from_settings(settings)
            load_before = load()
            result = asyncio.run(scenario(settings, service, store, questions, clicks))
            result |= {"load_before": load_before, "load_after": load(), "answer_workers": settings.answer_workers,
                       "tokens": tokens}
            service.close()
        finally:
            drop_collections(settings, [name])
    waits = result["click_waits"]
    result |= {"click_wait_p50_s": percentile(waits, 50), "click_wait_p99_s": percentile(waits, 99),
               "click_wait_max_s": max(waits, default=float("nan")),
               "clicks_within_3s": sum(w < INTERACTION_DEADLINE for w in waits)}
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=48, help="num_predict per answer")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.questions, args.clicks, args.tokens)
    print(f"discord load: {args.questions} questions at once, {args.clicks} vote clicks meanwhile, "
          f"{result['answer_workers']} generations at a time; load {result['load_before']} → {result['load_after']}")
    print(table(
        ["measure", "value"],
        [["click answered p50 s", result["click_wait_p50_s"]], ["click answered p99 s", result["click_wait_p99_s"]],
         ["click answered max s", result["click_wait_max_s"]],
         ["clicks answered within 3s", f"{result['clicks_within_3s']}/{args.clicks}"],
         ["requests Discord refused", len(result["refused"])],
         ["answers delivered", f"{result['answers_delivered']}/{args.questions}"],
         ["votes stored", result["votes_stored"]], ["all answered after s", result["seconds"]]],
    ))
    write_result("discord_load", result, args.out)
    return result


if __name__ == "__main__":
    main()
