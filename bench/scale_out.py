"""Scaling out on one host: 20 questions at once, questions/s and p50/p95 latency.

    python -m bench.scale_out [--concurrency 20] [--rounds 3] [--tokens 24] [--part weaviate,ollama]

- weaviate (retrieval only: `AnswerService.retrieve`): the configured single Weaviate node
  against a 3-node cluster started here on free ports (replication factor 3, QUORUM), the
  handbook ingested into each. In the cluster, three services list the nodes in three orders
  (as three bot replicas would be configured), and the questions go round-robin between them.
- ollama (whole answers: `AnswerService.ask`, `--tokens` long): the configured Ollama against
  two Ollama servers behind haproxy, started here (`teambot.ollama_replicas`), the dev model
  created on each.
Every run is `--rounds` bursts of `--concurrency` questions from bench/qa_set.json. The servers
and collections started here are removed at the end. On a machine with few cores, every extra
server shares the same cores: read the ratio as what the extra copies cost, not as what they
give on machines of their own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.harness import (
    ROOT, drop_collections, free_port_block, load, percentile, scratch_name, table, write_result,
)
from core.settings import load_settings

HANDBOOK = ROOT / "examples" / "handbook"
QA = json.loads((ROOT / "bench" / "qa_set.json").read_text())


def burst(ask, questions: list[str], concurrency: int, rounds: int) -> dict:
    """`rounds` bursts of `concurrency` questions at once; q/s over all, latency p50/p95."""
    latencies, failures = [], 0
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for r in range(rounds):
            batch = [questions[(r * concurrency + i) % len(questions)] for i in range(concurrency)]

            def one(pair):
                i, question = pair
                t = time.perf_counter()
                ask(i, question)
                return time.perf_counter() - t

            for future in [pool.submit(one, pair) for pair in enumerate(batch)]:
                try:
                    latencies.append(future.result())
                except Exception:  # noqa: BLE001 - counted: a failed question is part of the result
                    failures += 1
    wall = time.perf_counter() - started
    return {"questions": len(latencies), "failed": failures, "wall_s": round(wall, 2),
            "questions_per_s": round(len(latencies) / wall, 2),
            "p50_s": round(percentile(latencies, 50), 3), "p95_s": round(percentile(latencies, 95), 3)}


def weaviate_part(settings, concurrency: int, rounds: int, scratch: Path) -> dict:
    from pipeline.indexing import Indexer
    from pipeline.querying import AnswerService
    from teambot import weaviate_cluster

    questions = [q for q, _ in QA["answerable"]]
    name = scratch_name("ScaleOut")
    Indexer(settings, name).ingest([HANDBOOK])
    single = AnswerService(settings)
    base = free_port_block(weaviate_cluster.INTERNAL_OFFSET + 12)
    cluster = settings.model_copy(update={
        "data_dir": scratch / "cluster", "weaviate_url": f"http://127.0.0.1:{base}", "weaviate_grpc_port": base + 50,
        "weaviate_replication_factor": 3, "weaviate_consistency": "QUORUM",
    })
    nodes = weaviate_cluster.nodes(cluster, 3)
    weaviate_cluster.start(cluster, 3)
    try:
        first = cluster.model_copy(update={"weaviate_peers": [n.peer_setting() for n in nodes[1:]]})
        Indexer(first, name).ingest([HANDBOOK])
        services = [
            AnswerService(first.model_copy(update={
                "weaviate_url": nodes[k].url, "weaviate_grpc_port": nodes[k].grpc,
                "weaviate_peers": [n.peer_setting() for n in nodes[k + 1:] + nodes[:k]],
            }))
            for k in range(3)
        ]
        for service in [single, *services]:  # connections and caches warm before the clock starts
            service.retrieve(questions[0], name)
        one = burst(lambda i, q: single.retrieve(q, name), questions, concurrency, rounds)
        three = burst(lambda i, q: services[i % 3].retrieve(q, name), questions, concurrency, rounds)
    finally:
        weaviate_cluster.stop(cluster)
        drop_collections(settings, [name])
    return {"one_node": one, "three_nodes": three}


def ollama_part(settings, concurrency: int, rounds: int, tokens: int, scratch: Path) -> dict:
    from pipeline.indexing import Indexer
    from pipeline.querying import AnswerService
    from teambot import devmodel, ollama_replicas

    questions = [q for q, _ in QA["answerable"]]
    name = scratch_name("ScaleOut")
    base = free_port_block(4)
    # A burst queues at the model: no answer is abandoned or cut off by the breaker while it waits.
    patient = {"max_answer_tokens": tokens, "generation_timeout": 900.0, "circuit_failures": 1000}
    replicated = settings.model_copy(update={
        "data_dir": scratch / "replicas", "ollama_url": f"http://127.0.0.1:{base}", "ollama_replicas": 2, **patient,
    })
    single_settings = settings.model_copy(update=patient)
    Indexer(settings, name).ingest([HANDBOOK])
    try:
        ollama_replicas.start(replicated)
        devmodel.ensure_dev_model(replicated)
        single, two = AnswerService(single_settings), AnswerService(replicated)
        for service in (single, two):
            service.ask(questions[0], collection=name)  # the model loaded on each server first
        two.ask(questions[1], collection=name)
        one = burst(lambda i, q: single.ask(q, collection=name), questions, concurrency, rounds)
        pair = burst(lambda i, q: two.ask(q, collection=name), questions, concurrency, rounds)
        served = {k: v.get("served") for k, v in ollama_replicas.balancer(replicated).server_states().items()}
    finally:
        ollama_replicas.stop(replicated)
        drop_collections(settings, [name])
    return {"one_server": one, "two_servers": pair, "requests_per_replica": served}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--part", default="weaviate,ollama")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    settings = load_settings()
    parts = set(args.part.split(","))
    result: dict = {"concurrency": args.concurrency, "rounds": args.rounds, "tokens": args.tokens, "load_before": load()}
    scratch = Path(tempfile.mkdtemp(prefix="teambot-scale-"))
    try:
        if "weaviate" in parts:
            result["weaviate"] = weaviate_part(settings, args.concurrency, args.rounds, scratch)
        if "ollama" in parts:
            result["ollama"] = ollama_part(settings, args.concurrency, args.rounds, args.tokens, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["load_after"] = load()
    rows = []
    for part, (a, b) in (("weaviate", ("one_node", "three_nodes")), ("ollama", ("one_server", "two_servers"))):
        if part in result:
            for label in (a, b):
                r = result[part][label]
                rows.append([f"{part}: {label.replace('_', ' ')}", r["questions"], r["failed"], r["questions_per_s"],
                             r["p50_s"], r["p95_s"]])
    print(table(["setup", "questions", "failed", "q/s", "p50 s", "p95 s"], rows))
    print(f"{args.concurrency} at once, {args.rounds} rounds; load {result['load_before']} → {result['load_after']}")
    write_result("scale_out", result, args.out)
    return result


if __name__ == "__main__":
    main()
