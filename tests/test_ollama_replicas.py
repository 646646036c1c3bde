"""Several Ollama servers behind haproxy at one URL (`teambot services up --ollama-replicas 2`).

The scenario, as an operator would live it: two replicas and their balancer on ports of their
own (the shared Ollama at 11434 serves every other test), the dev model imported into each; a
burst of questions through the real AnswerService; one replica SIGKILLed while they stream.
Every question gets its whole answer, shown once: a request that had not begun is replayed by
haproxy on the live replica, an answer cut off mid-stream goes on there from where it broke.
haproxy marks the killed replica DOWN; `services up` again restarts it, and it is UP and
serving a second later. The resumed answer, and one whose retry writes something else (an
error, nothing repeated), are also checked against a stand-in model server that drops its
stream on cue. The quick tests need haproxy but no server.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ollama
import pytest
from typer.testing import CliRunner

from bench.harness import free_port_block
from core.answer import Outcome
from core.errors import ModelUnavailable
from core.servers import ollama_model_urls, ollama_replica_urls
from pipeline.querying import AnswerService, Diverged, Replay
from teambot import devmodel, ollama_replicas
from teambot.balancer import Balancer
from teambot.cli import app

QUESTIONS = [
    "How many days of paid vacation do full-time employees get?",
    "Which tool do expense claims go in?",
    "How do I roll back a deploy?",
    "Who do I page when production is down?",
    "How do I request time off?",
    "Where is the on-call runbook?",
]
runner = CliRunner()


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


# ---------------------------------------------------------------- no server


def test_replay_skips_what_was_shown_and_refuses_another_answer():
    replay = Replay("Full-time staff get 25 days")
    assert [replay(d) for d in ["Full-", "time staff get", " 25 days of", " paid leave [1]."]] == [
        "", "", " of", " paid leave [1]."
    ]
    with pytest.raises(Diverged):
        Replay("Full-time staff")("Part-time")
    short = Replay("Full-time staff get 25 days")
    short("Full-time")
    assert not short.caught_up


def test_replica_urls_follow_the_balancer_port_and_the_pid_files(settings, tmp_path):
    config = settings.model_copy(update={"ollama_url": "http://127.0.0.1:21000", "data_dir": tmp_path})
    assert ollama_replica_urls(config) == [] and ollama_model_urls(config) == ["http://127.0.0.1:21000"]
    assert ollama_replica_urls(config.model_copy(update={"ollama_replicas": 3})) == [
        "http://127.0.0.1:21001", "http://127.0.0.1:21002", "http://127.0.0.1:21003"
    ]
    # Started by `services up --ollama-replicas 2`: found from their pid files, the balancer's aside.
    (tmp_path / "run").mkdir()
    for name in ("ollama-1.pid", "ollama-2.pid", "ollama-haproxy.pid", "ollama.pid"):
        (tmp_path / "run" / name).write_text("1")
    assert ollama_model_urls(config) == ["http://127.0.0.1:21001", "http://127.0.0.1:21002"]


def test_the_balancer_config_is_valid_haproxy(tmp_path):
    lb = Balancer("bots", 39000, (("bot-1", "127.0.0.1:39001"), ("bot-2", "127.0.0.1:39002")), "/healthz", tmp_path)
    lb.config_file.parent.mkdir(parents=True)
    lb.config_file.write_text(lb.config())
    check = subprocess.run(["haproxy", "-c", "-f", str(lb.config_file)], capture_output=True, text=True,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert check.returncode == 0, check.stdout + check.stderr
    for line in ("balance leastconn", "option httpchk GET /healthz", "retry-on conn-failure empty-response",
                 "option redispatch 1", "timeout server 10m", "server bot-2 127.0.0.1:39002"):
        assert line in lb.config()


# ---------------------------------------------------------------- a stream cut off mid-answer


class BreakingOllama:
    """Where Ollama would be: each chat request streams the next of `replies` a word at a time;
    one ending in BREAK stops there with the connection dropped mid-response (chunked, so the
    client sees the body cut short, as when haproxy loses the replica it was streaming from)."""

    BREAK = "\x00"

    def __init__(self, *replies: str) -> None:
        self.replies, self.requests = list(replies), 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply = fake.replies[fake.requests]
                fake.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for word in reply.rstrip(fake.BREAK).split(" "):
                        self._chunk({"message": {"role": "assistant", "content": word + " "}, "done": False})
                    if reply.endswith(fake.BREAK):
                        self.close_connection = True
                        return
                    self._chunk({"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                                 "prompt_eval_count": 100, "eval_count": 10})
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:  # the client stopped reading (a retry it could not use)
                    self.close_connection = True

            def _chunk(self, part: dict) -> None:
                line = json.dumps({"model": "teambot-dev", "created_at": "2026-12-02T00:00:00Z", **part}).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
                time.sleep(0.01)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def breaking(handbook):
    """An AnswerService over the handbook whose model server is a BreakingOllama; set `.replies`."""
    fake = BreakingOllama()
    service = AnswerService(handbook.service.settings.model_copy(update={"ollama_url": fake.url, "retry_backoff": 0.01}))
    yield fake, service
    service.close()
    fake.close()


def test_an_answer_cut_off_mid_stream_goes_on_from_where_it_broke(handbook, breaking):
    fake, service = breaking
    fake.replies, fake.requests = ["Full-time employees get" + fake.BREAK, "Full-time employees get 25 days [1]."], 0
    streamed: list[str] = []
    answer = service.ask(QUESTIONS[0], collection=handbook.collection, on_token=streamed.append)
    assert fake.requests == 2
    assert answer.text == "Full-time employees get 25 days [1]." and "".join(streamed).strip() == answer.text


def test_a_retry_that_writes_another_answer_is_not_joined_to_the_shown_start(handbook, breaking):
    fake, service = breaking
    fake.replies, fake.requests = ["Full-time employees get" + fake.BREAK, "Part-time staff get 12 days [1]."], 0
    streamed: list[str] = []
    with pytest.raises(ModelUnavailable):
        service.ask(QUESTIONS[0], collection=handbook.collection, on_token=streamed.append)
    shown = "".join(streamed).strip()  # the start, as far as the guard had let it through; nothing after
    assert fake.requests == 2 and shown and "Full-time employees get".startswith(shown)


# ---------------------------------------------------------------- two real replicas


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _status(config, monkeypatch) -> tuple[int, dict, str]:
    monkeypatch.setenv("TEAMBOT_DATA_DIR", str(config.data_dir))
    monkeypatch.setenv("TEAMBOT_OLLAMA_URL", config.ollama_url)
    as_json = runner.invoke(app, ["services", "status", "--json"])
    return as_json.exit_code, json.loads(as_json.output), runner.invoke(app, ["services", "status"]).output


def test_a_killed_replica_loses_no_answer_and_rejoins(handbook, tmp_path, monkeypatch):
    port = free_port_block(3)  # the balancer's and the two replicas' after it
    config = handbook.service.settings.model_copy(update={
        "ollama_url": f"http://127.0.0.1:{port}", "data_dir": tmp_path / "data", "ollama_replicas": 2,
        "ollama_num_parallel": 1, "max_answer_tokens": 32, "top_k": 2, "retry_backoff": 0.1,
    })
    first, second = ollama_replicas.replicas(config)
    lb = ollama_replicas.balancer(config)
    service = None
    # The CLI replaces the root logger's handlers: the answering logger's own records are kept here.
    answer_log, records = logging.getLogger("teambot.answer"), _Records()
    answer_log.addHandler(records)
    level = answer_log.level
    answer_log.setLevel(logging.INFO)
    try:
        assert ollama_replicas.start(config, log=lambda _m: None) == {
            "ollama-1": "started", "ollama-2": "started", "ollama-haproxy": "started"
        }
        assert devmodel.ensure_dev_model(config, log=lambda _m: None) == "created"
        for replica in (first, second):  # each replica holds the model itself
            assert devmodel.DEV_MODEL in {m.model.split(":")[0] for m in ollama.Client(replica.url).list().models}
        _wait(lambda: {s["status"] for s in lb.server_states().values()} == {"UP"}, 10, "both replicas UP")
        code, report, text = _status(config, monkeypatch)  # found from the pid files
        assert code == 0, text
        assert report["ollama"]["haproxy"] == "2/2 UP" and report["ollama"]["managed"]
        assert [report[r.name]["url"] for r in (first, second)] == [first.url, second.url]
        assert f"ollama-2  ready  {second.url}  managed=True  haproxy=UP" in text

        service = AnswerService(config)
        streamed: dict[str, list[str]] = {q: [] for q in QUESTIONS}
        answers, errors = {}, {}

        def ask(question: str) -> None:
            try:
                answers[question] = service.ask(question, collection=handbook.collection,
                                                on_token=streamed[question].append)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors[question] = exc

        threads = [threading.Thread(target=ask, args=(q,), name=f"ask-{i}") for i, q in enumerate(QUESTIONS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        # Each replica generates one answer at a time, the others wait in its queue: with two answers
        # streaming (an abstention is one piece), each replica has one going.
        _wait(lambda: sum(1 for q in QUESTIONS if len(streamed[q]) > 1 and q not in answers) >= 2, 90,
              "two answers streaming")
        ollama_replicas.kill(config, first, signal.SIGKILL)
        for thread in threads:
            thread.join(timeout=300)
        assert not any(thread.is_alive() for thread in threads), "answers still running after 300 s"
        burst = time.monotonic() - started
        assert not errors, errors
        for question, answer in answers.items():
            assert answer.outcome in (Outcome.ANSWERED, Outcome.ABSTAINED) and answer.text.strip(), answer
            # Shown once, whole: what the user saw is the answer, with nothing repeated.
            assert "".join(streamed[question]).strip() == answer.text.strip(), question
        resumed = [r for r in records.records if "broke off after" in r.getMessage()]
        assert resumed, "no answer was cut off mid-stream: the kill came too late to test that"

        _wait(lambda: lb.server_states()[first.name]["status"] == "DOWN", 30, "haproxy to mark the killed replica DOWN")
        code, report, text = _status(config, monkeypatch)
        assert code == 1 and not report[first.name]["ready"] and report[first.name]["haproxy"] == "DOWN"
        assert report["ollama"]["ready"] and report["ollama"]["haproxy"] == "1/2 UP"

        # A resumed answer is the one an uninterrupted run gives (same prompt, same seed).
        interrupted = {int(r.threadName.split("-")[1]) for r in resumed if r.threadName.startswith("ask-")}
        question = QUESTIONS[min(interrupted)]
        assert service.ask(question, collection=handbook.collection).text == answers[question].text

        # `services up` again: the killed replica restarts on its models and rejoins.
        assert ollama_replicas.start(config, log=lambda _m: None) == {
            "ollama-1": "started", "ollama-2": "running", "ollama-haproxy": "running"
        }
        assert devmodel.ensure_dev_model(config, log=lambda _m: None) == "present"
        _wait(lambda: lb.server_states()[first.name]["status"] == "UP", 30, "the restarted replica UP")
        served = lb.server_states()[first.name]["served"]
        pair = [threading.Thread(target=ollama.Client(config.ollama_url).chat, kwargs={
            "model": devmodel.DEV_MODEL, "messages": [{"role": "user", "content": "Say hi."}],
            "options": {"num_predict": 4},
        }) for _ in range(2)]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in pair)
        assert lb.server_states()[first.name]["served"] > served, "the balancer sent the restarted replica nothing"
        print(f"burst of {len(QUESTIONS)} with a replica killed: {burst:.1f}s; resumed {len(resumed)} answer(s)")
    finally:
        answer_log.removeHandler(records)
        answer_log.setLevel(level)
        if service is not None:
            service.close()
        ollama_replicas.stop(config)
