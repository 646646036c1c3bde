"""The `teambot` command. Heavy imports (torch, haystack, bots) happen inside each verb."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from core.settings import Settings, SettingsError, load_settings, secret_value

app = typer.Typer(
    help="teambot: answers questions in Slack and Discord from your team's documents, with sources.",
    no_args_is_help=True,
    add_completion=False,
)
services_app = typer.Typer(help="Run the real Weaviate and Ollama servers locally.", no_args_is_help=True)
feedback_app = typer.Typer(help="Inspect and export 👍/👎 feedback.", no_args_is_help=True)
discord_app = typer.Typer()
db_app = typer.Typer(help="The feedback database.", no_args_is_help=True)
review_app = typer.Typer(help="The review page: inbox of bad answers, corrections, quality charts.")
sources_app = typer.Typer(help="Synced sources (websites, git repositories, Confluence, Google Drive, exports): check the file, see their state.",
                          no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(db_app, name="db")
app.add_typer(review_app, name="review")
app.add_typer(services_app, name="services")
app.add_typer(feedback_app, name="feedback")
app.add_typer(discord_app, name="discord")


def _settings(*, bot: bool = False) -> Settings:
    """The settings, and logging with every secret redacted (bots log at TEAMBOT_LOG_LEVEL, the
    other commands warnings only)."""
    from core.logging_setup import configure_logging
    from core.secret_files import private_dir

    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2)
    configure_logging(settings, quiet=not bot)
    # Whichever command runs first makes the data dir, and it is the owner's alone: it holds the
    # feedback database, exports, runs and secrets.
    private_dir(settings.data_dir)
    return settings


def _fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(code)


# ---------------------------------------------------------------- services


@services_app.command("up")
def services_up(
    model: bool = typer.Option(True, help="Also import the dev chat model into Ollama."),
    weaviate_nodes: int = typer.Option(
        1, "--weaviate-nodes", min=1, max=9, help="Run a Weaviate cluster of this many nodes (3 survives one down).",
    ),
    ollama_replicas: int = typer.Option(
        0, "--ollama-replicas", min=0, max=8,
        help="Run this many Ollama servers behind haproxy at TEAMBOT_OLLAMA_URL (default TEAMBOT_OLLAMA_REPLICAS).",
    ),
) -> None:
    """Build (first run only) and start Weaviate and Ollama on loopback; import the dev model."""
    from teambot import devmodel, services, weaviate_cluster

    settings = _settings()
    if ollama_replicas:
        settings = settings.model_copy(update={"ollama_replicas": ollama_replicas})
    for service in services.SERVICES:
        started = time.monotonic()
        if service is services.OLLAMA and _start_ollama_replicas(settings):
            continue
        if service is services.WEAVIATE and weaviate_nodes > 1:
            try:
                states = weaviate_cluster.start(settings, weaviate_nodes, log=lambda m: typer.echo(m, err=True))
            except services.ServiceError as exc:
                _fail(str(exc))
            for node, state in zip(weaviate_cluster.nodes(settings, weaviate_nodes), states):
                typer.echo(f"{node.name}: {state} at {node.url} (gRPC {node.grpc})")
            typer.echo(f"weaviate cluster: {weaviate_nodes} nodes healthy ({time.monotonic() - started:.1f}s); "
                       f"set TEAMBOT_WEAVIATE_PEERS={weaviate_cluster.peers_setting(settings, weaviate_nodes)} and "
                       f"TEAMBOT_WEAVIATE_REPLICATION_FACTOR={weaviate_nodes}")
            continue
        try:
            state = services.start(service, settings, log=lambda m: typer.echo(m, err=True))
        except services.ServiceError as exc:
            _fail(str(exc))
        typer.echo(f"{service.name}: {state} at {service.url(settings)} ({time.monotonic() - started:.1f}s)")
    if model and settings.model == devmodel.DEV_MODEL:
        try:
            typer.echo(f"model {devmodel.DEV_MODEL}: {devmodel.ensure_dev_model(settings, log=lambda m: typer.echo(m, err=True))}")
        except devmodel.DevModelError as exc:
            _fail(str(exc))


def _start_ollama_replicas(settings: Settings) -> bool:
    """Several Ollama servers behind haproxy at TEAMBOT_OLLAMA_URL; False for a single server."""
    from teambot import ollama_replicas, services

    if not ollama_replicas.replicas(settings):
        return False
    started = time.monotonic()
    try:
        states = ollama_replicas.start(settings, log=lambda m: typer.echo(m, err=True))
    except services.ServiceError as exc:
        _fail(str(exc))
    for name, state in states.items():
        typer.echo(f"{name}: {state}")
    typer.echo(f"ollama: {len(states) - 1} replicas behind haproxy at {settings.ollama_url} "
               f"({time.monotonic() - started:.1f}s)")
    return True


@services_app.command("down")
def services_down() -> None:
    """Stop the servers this command started (never an external one)."""
    from teambot import ollama_replicas, services, weaviate_cluster

    settings = _settings()
    for name, state in weaviate_cluster.stop(settings):
        typer.echo(f"{name}: {state}")
    for name, state in ollama_replicas.stop(settings).items():
        typer.echo(f"{name}: {state}")
    for service in services.SERVICES:
        typer.echo(f"{service.name}: {services.stop(service, settings)}")


@services_app.command("status")
def services_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Report whether each server answers; exits 1 if one does not."""
    from teambot import ollama_replicas, services, weaviate_cluster

    settings = _settings()
    report = services.status(settings)
    if cluster := weaviate_cluster.status(settings):  # a cluster started here: each node, not "weaviate"
        del report["weaviate"]
        report = {**{name: {**info, "managed": True} for name, info in cluster.items()}, **report}
    # Ollama replicas: the balancer at the one URL as "ollama", then each replica as haproxy sees it.
    report |= {name: {**report.get(name, {}), **info} for name, info in ollama_replicas.status(settings).items()}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for name, info in report.items():
            state = "ready" if info["ready"] else "DOWN"
            extra = f"  cluster={info['cluster_status']}" if "cluster_status" in info else ""
            extra += f"  haproxy={info['haproxy']}" if "haproxy" in info else ""
            typer.echo(f"{name:9} {state:6} {info['url']}  managed={info['managed']}{extra}")
    if not all(info["ready"] for info in report.values()):
        raise typer.Exit(1)


@app.command("config")
def config(markdown: bool = typer.Option(False, help="Print the README's settings table.")) -> None:
    """Show the effective settings (secrets masked)."""
    settings = _settings()
    if markdown:
        typer.echo("| variable | default | meaning |\n|---|---|---|")
        for name, field in Settings.model_fields.items():
            default = "" if field.is_required() else field.get_default(call_default_factory=True)
            default = str(default).replace(str(Path.home()), "~")
            typer.echo(f"| `TEAMBOT_{name.upper()}` | `{default}` | {field.description} |")
        return
    for name, value in settings.model_dump().items():
        typer.echo(f"{name} = {value!s}")


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(..., help="Files or folders to index."),
    collection: Optional[str] = typer.Option(None, "--collection", "-c", help="Target collection (team)."),
    url_base: Optional[str] = typer.Option(
        None, "--url-base", help="Web address the folder is published at (a repository or intranet URL): sources "
        "become links. Kept for later runs of the same folder.",
    ),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Re-index everything into a new index, then switch to it (after a chunking or "
        "embedder change); questions are answered from the old one until then.",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Index documents into Weaviate; only changed files are re-indexed, deleted ones removed."""
    from tqdm import tqdm

    from core.errors import TeambotError
    from pipeline.indexing import Indexer, Progress
    from pipeline.stores import InvalidCollectionName, close_stores

    settings = _settings()
    if url_base is not None and not url_base.startswith(("http://", "https://")):
        _fail(f"--url-base must start with http:// or https://, got {url_base!r}", code=2)
    try:
        indexer = Indexer(settings, collection)
    except InvalidCollectionName as exc:
        _fail(str(exc), code=2)
    # Chunks, not files: one large manual is most of the work of a run.
    bar = tqdm(total=0, unit="chunk", disable=not progress, file=sys.stderr)

    def on_progress(step: Progress) -> None:
        bar.total = step.chunks_total
        bar.set_description_str(f"file {step.files_done}/{step.files_total}")
        if step.path:
            bar.set_postfix_str(Path(step.path).name[-30:])
        bar.update(step.chunks_done - bar.n)

    try:
        report = indexer.ingest(paths, on_progress=on_progress, url_base=url_base, rebuild=rebuild)
    except TeambotError as exc:
        _fail(f"{exc.user_message} ({exc})")
    except ValueError as exc:
        _fail(str(exc), code=2)
    finally:
        bar.close()
        close_stores()
    for skipped in report.skipped:
        typer.secho(f"skipped {skipped.path}: {skipped.reason}", fg="yellow", err=True)
    typer.echo(report.summary())


@app.command()
def ask(
    question: str,
    collection: Optional[str] = typer.Option(None, "--collection", "-c", help="Collection (team) to search."),
    stream: bool = typer.Option(True, help="Print the answer as it is generated."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole answer object as JSON."),
) -> None:
    """Answer a question from the indexed documents, with sources."""
    from core.errors import TeambotError
    from pipeline.querying import AnswerService
    from pipeline.stores import close_stores

    settings = _settings()
    service = AnswerService(settings)
    streamed = stream and not as_json

    def on_token(delta: str) -> None:
        typer.echo(delta, nl=False)

    try:
        answer = service.ask(question, collection=collection, on_token=on_token if streamed else None)
    except TeambotError as exc:
        _fail(exc.user_message)
    finally:
        service.close()
        close_stores()
    if as_json:
        typer.echo(json.dumps(answer.to_dict(), indent=2, default=str))
        return
    if streamed:
        typer.echo("\n")
        typer.echo(answer.format_plain().split("\n", 1)[1].lstrip("\n") if answer.sources else "", nl=bool(answer.sources))
    else:
        typer.echo(answer.format_plain())
    t = answer.timings
    typer.secho(
        f"[{answer.model} · retrieve {t.get('retrieve', 0):.2f}s · generate {t.get('generate', 0):.1f}s]",
        fg="bright_black", err=True,
    )


@app.command()
def slack(
    http: bool = typer.Option(
        False, "--http", help="Serve the Events API and interactivity on TEAMBOT_HTTP_PORT instead of Socket Mode."
    ),
    host: str = typer.Option("0.0.0.0", help="Interface the --http server listens on."),
) -> None:
    """Run the Slack bot: Socket Mode, or HTTP mode with --http (the same listeners)."""
    settings = _settings(bot=True)
    needed = {"TEAMBOT_SLACK_BOT_TOKEN": settings.slack_bot_token}
    if http:
        needed["TEAMBOT_SLACK_SIGNING_SECRET"] = settings.slack_signing_secret
    else:
        needed["TEAMBOT_SLACK_APP_TOKEN"] = settings.slack_app_token
    missing = [name for name, value in needed.items() if not secret_value(value)]
    if missing:
        _fail(f"`teambot slack{' --http' if http else ''}` needs {' and '.join(missing)}.", code=2)

    from teambot import runtime

    _stop_on_sigterm()
    try:
        runtime.run_slack(settings, http=http, host=host, say=typer.echo)
    except runtime.StartError as exc:
        _fail(str(exc), code=exc.code)


def _stop_on_sigterm() -> None:
    """`docker stop` and systemd send SIGTERM: stop as Ctrl-C does, after the answers in progress."""

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@discord_app.callback(invoke_without_command=True)
def discord(ctx: typer.Context) -> None:
    """Run the Discord bot (mentions, DMs and /ask; needs TEAMBOT_DISCORD_TOKEN)."""
    if ctx.invoked_subcommand is not None:
        return
    from teambot import runtime

    settings = _settings(bot=True)
    _stop_on_sigterm()
    try:
        runtime.run_discord(settings, say=typer.echo)
    except runtime.StartError as exc:
        _fail(str(exc), code=exc.code)


@discord_app.command("sync")
def discord_sync() -> None:
    """Sync the /ask command with Discord now (the bot syncs by itself only when it changed)."""
    from bots.discord.app import DiscordSetupError, sync_now

    settings = _settings(bot=True)
    try:
        sync_now(settings)
    except DiscordSetupError as exc:
        _fail(str(exc), code=2)
    typer.echo("slash commands synced")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the feedback database's schema up to date (the bots do it when they start)."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from feedback.store import engine_for, upgrade

    settings = _settings()
    try:
        engine = engine_for(settings.feedback_url)
        before, now = upgrade(engine)
    except (SQLAlchemyError, CommandError, OSError) as exc:
        _fail(f"could not upgrade the feedback database: {type(exc).__name__}: {getattr(exc, 'orig', None) or exc}")
    engine.dispose()
    if before == now:
        typer.echo(f"feedback database already up to date (revision {now})")
    else:
        typer.echo(f"feedback database upgraded: {before or 'unversioned'} → {now}")


@feedback_app.command("stats")
def feedback_stats(as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON.")) -> None:
    """Counts of answers, 👍 and 👎 by model, and of hand-offs to people."""
    from dataclasses import asdict

    from feedback.store import FeedbackStore

    store = FeedbackStore.from_settings(_settings())
    stats, handoffs = store.stats(), store.handoff_stats()
    if as_json:
        typer.echo(json.dumps({"models": [asdict(s) for s in stats],
                               "handoffs": {**asdict(handoffs), "waiting": handoffs.waiting}}, indent=2))
        return
    if not stats:
        typer.echo("No answers recorded yet.")
        return
    width = max(len("model"), *(len(s.model) for s in stats))
    typer.echo(f"{'model':<{width}}  {'answers':>7}  {'👍 up':>7}  {'👎 down':>7}")
    for s in stats:
        typer.echo(f"{s.model:<{width}}  {s.answers:>7}  {s.up:>7}  {s.down:>7}")
    if len(stats) > 1:
        typer.echo(
            f"{'total':<{width}}  {sum(s.answers for s in stats):>7}  {sum(s.up for s in stats):>7}  "
            f"{sum(s.down for s in stats):>7}"
        )
    if handoffs.requested:
        median = handoffs.median_minutes_to_resolve
        typer.echo(
            f"\nhand-offs to people: {handoffs.requested} asked, {handoffs.resolved} resolved, {handoffs.waiting} waiting"
            + (f" (median {median:.1f} min to resolve)" if median is not None else "")
        )


@feedback_app.command("gaps")
def feedback_gaps(
    as_json: bool = typer.Option(False, "--json", help="Print the gaps as JSON."),
    closed: bool = typer.Option(False, "--closed", help="List the closed gaps too."),
) -> None:
    """Questions the documents don't answer: abstentions, hand-offs and 👎 a reviewer put down to
    retrieval, grouped by question, most asked first, with the documents the bot came closest with."""
    from feedback.store import FeedbackStore
    from pipeline.embedders import embedder_spec
    from review.gaps import find_gaps, question_embedder

    settings = _settings()
    gaps = find_gaps(FeedbackStore.from_settings(settings), question_embedder(settings),
                     embedder_spec(settings).same_topic, include_closed=closed)
    if as_json:
        typer.echo(json.dumps([g.as_dict() for g in gaps], indent=2, ensure_ascii=False))
        return
    if not gaps:
        typer.echo("No gaps: every question found an answer, or nobody said otherwise.")
        return
    for g in gaps:
        state = f"  (closed: {g.closed_by})" if g.closed else ""
        typer.echo(f"{g.count}× {g.questions[0]}{state}")
        for question in g.questions[1:3]:
            typer.echo(f"     also: {question}")
        if g.documents:
            typer.echo("     closest: " + ", ".join(path for path, _ in g.documents))


@app.command("rules")
def rules_check(path: Path = typer.Argument(..., help="A channel rules file (TOML).")) -> None:
    """Check a channel rules file and print the rule of each channel in it."""
    from bots.channel_rules import RulesError, load_rules

    try:
        rules = load_rules(path)
    except RulesError as exc:
        _fail(str(exc), code=2)
    for key, rule in [("default", rules.default), *rules.channels.items()]:
        changed = rule.model_dump(exclude_defaults=True)
        described = ", ".join(f"{k}={v!r}" for k, v in changed.items()) or "as the defaults"
        typer.echo(f"{key}: {described}")


def _load_sources(settings: Settings, path: Path | None):
    from pipeline.sources.config import SourcesError, load_sources

    path = path or settings.sources
    if path is None:
        _fail("no sources file: give --sources FILE or set TEAMBOT_SOURCES", code=2)
    try:
        return load_sources(path)
    except SourcesError as exc:
        _fail(str(exc), code=2)


@sources_app.command("check")
def sources_check(path: Optional[Path] = typer.Argument(None, help="A sources file (default TEAMBOT_SOURCES).")) -> None:
    """Check a sources file and print each source in it."""
    for name, source in _load_sources(_settings(), path).items():
        typer.echo(f"{name}: {source.kind} {source.location} → {source.collection}, every {source.every}")


@sources_app.command("status")
def sources_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Each synced source's state: documents, last success, last error, the last run's counts."""
    from feedback.store import FeedbackStore
    from feedback.sync_state import SyncState

    rows = SyncState(FeedbackStore.from_settings(_settings())).status()
    if as_json:
        typer.echo(json.dumps([{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in vars(r).items()}
                               for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no source has been synced yet (teambot sync --once)")
    for r in rows:
        when = r.last_success.strftime("%Y-%m-%d %H:%M UTC") if r.last_success else "never"
        line = f"{r.name} ({r.kind} → {r.collection}): {r.documents} documents, last success {when}"
        if r.running:
            line += ", syncing now"
        if r.last_error:
            line += f"\n  last run failed ({r.failures} in a row): {r.last_error}"
        if r.counts.get("refused_deletions"):
            line += f"\n  {r.counts['refused_deletions']} deletions refused by the mass-deletion guard"
        if r.counts.get("withdrawn"):
            line += f"\n  {r.counts['withdrawn']} documents withdrawn: no longer shown to everyone at the origin"
        typer.echo(line)


@app.command()
def sync(
    names: Optional[list[str]] = typer.Argument(None, help="Sources to sync (all of the file's when none)."),
    once: bool = typer.Option(False, "--once", help="Sync each source once now, then exit."),
    sources_file: Optional[Path] = typer.Option(None, "--sources", help="The sources file (default TEAMBOT_SOURCES)."),
    allow_mass_delete: bool = typer.Option(
        False, "--allow-mass-delete", help="Remove what is gone at the origin even when it is more than the "
        "source's max_delete_share.",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar per source."),
) -> None:
    """Keep synced sources in their collections: on their schedule, or each once (--once). Exit code with
    --once: 1 if a source failed, 3 if the mass-deletion guard held deletions back."""
    import threading

    from tqdm import tqdm

    from feedback.store import FeedbackStore
    from feedback.sync_state import SyncState
    from pipeline.indexing import Indexer
    from pipeline.sources import engine
    from pipeline.sources.schedule import run_schedule
    from pipeline.stores import close_stores

    settings = _settings(bot=not once)
    sources = _load_sources(settings, sources_file)
    if unknown := [n for n in names or () if n not in sources]:
        _fail(f"no source named {unknown[0]!r} in the sources file (it has {', '.join(sources)})", code=2)
    chosen = [sources[n] for n in names] if names else list(sources.values())
    state = SyncState(FeedbackStore.from_settings(settings))
    indexers: dict[str, Indexer] = {}

    def run_one(source) -> engine.SyncReport:
        indexer = indexers.setdefault(source.collection, Indexer(settings, source.collection))
        bar = tqdm(total=0, unit="page", desc=source.name, disable=not progress, file=sys.stderr)

        def on_progress(done: int, total: int, key: str) -> None:
            bar.total = max(total, done)
            if key:
                bar.set_postfix_str(key[-40:])
            bar.update(done - bar.n)

        try:
            report = engine.sync(source, state, settings, allow_mass_delete=allow_mass_delete, indexer=indexer,
                                 on_progress=on_progress)
        finally:
            bar.close()
        typer.echo(report.summary())
        return report

    try:
        if once:
            reports = [run_one(source) for source in chosen]
            if any(r.error for r in reports):
                raise typer.Exit(1)
            if any(r.refused_deletions for r in reports):
                raise typer.Exit(3)
            return
        from bots.health import HealthListenerError, start_health_listener

        try:
            listener = start_health_listener(settings)
        except HealthListenerError as exc:
            _fail(str(exc), code=2)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            run_schedule(chosen, state, run_one, stop)
        except KeyboardInterrupt:
            pass
        finally:
            if listener is not None:
                listener.shutdown()
    finally:
        close_stores()


@feedback_app.command("export")
def feedback_export(
    min_examples: Optional[int] = typer.Option(None, help="Refuse below this many (default TEAMBOT_TRAIN_MIN_EXAMPLES)."),
    max_tokens: Optional[int] = typer.Option(None, help="Drop longer examples (default TEAMBOT_TRAIN_MAX_TOKENS)."),
    collections: Optional[str] = typer.Option(
        None, metavar="A,B", help="The scope: comma-separated collections to learn from, and the only ones the fine-tune will "
        "answer for (default: TEAMBOT_COLLECTION alone).",
    ),
    include_channel: list[str] = typer.Option(
        [], "--include-channel", metavar="ID", help="Also learn from this private, restricted or direct-message channel (repeatable).",
    ),
) -> None:
    """Build the fine-tuning dataset (train, dev, test) from rated answers (👍 as given, 👎 with a correction)."""
    from bots.channel_rules import RulesError, load_rules
    from training.export import ExportRefused, export

    settings = _settings()
    scope = None if collections is None else [c.strip() for c in collections.split(",") if c.strip()]
    try:
        # Read here: training does not import bots (the layers in pyproject.toml).
        rules = load_rules(settings.channel_rules) if settings.channel_rules else None
        result = export(settings, max_tokens=max_tokens, min_examples=min_examples, collections=scope,
                        include_channels=include_channel, rules=rules)
    except ExportRefused as exc:
        typer.echo(exc.result.format())
        _fail(str(exc))
    except (RulesError, ValueError) as exc:
        _fail(str(exc), code=2)
    typer.echo(result.format())


@app.command()
def train(
    base: Optional[str] = typer.Option(None, help="gemma3-270m, smollm2-135m, qwen2.5-coder-0.5b, an HF id or path."),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Name of the run (default: a timestamp)."),
    epochs: float = typer.Option(3.0, min=0.01),
    max_steps: int = typer.Option(-1, help="Stop after this many steps (overrides --epochs)."),
    batch_size: int = typer.Option(4, min=1),
    grad_accum: int = typer.Option(1, min=1),
    learning_rate: float = typer.Option(2e-4, "--lr", min=0.0),
    lora_r: int = typer.Option(16, min=1),
    lora_alpha: int = typer.Option(32, min=1),
    target_modules: str = typer.Option("all-linear", help="all-linear or e.g. q_proj,v_proj."),
    max_length: Optional[int] = typer.Option(None, help="Tokens per example (default TEAMBOT_TRAIN_MAX_TOKENS)."),
    eval_steps: int = typer.Option(10, min=1, help="Evaluate (and maybe stop early) every N steps."),
    patience: int = typer.Option(3, min=1, help="Evaluations without improvement before stopping."),
    seed: int = typer.Option(42),
    load_in_4bit: bool = typer.Option(False, "--4bit", help="QLoRA (CUDA + bitsandbytes)."),
    lora_dropout: float = typer.Option(0.05, min=0.0, max=0.9),
    method: str = typer.Option("sft", help="sft (👍 answers and corrections), dpo (preference pairs) or kto (👍/👎)."),
    from_run: str = typer.Option("auto", help="dpo/kto: the SFT run to start from (auto: the latest of this base; none: the base)."),
    retrieval: bool = typer.Option(False, "--retrieval", help="Train a query adapter (retrieval) from the export's "
                                   "retrieval pairs instead of the model; --run-id, --max-steps and --seed apply."),
) -> None:
    """LoRA fine-tune the base model on the exported feedback dataset (also under `accelerate launch`)."""
    if retrieval:
        _train_query_adapter(run_id, max_steps, seed)
        return
    from training.bases import UnknownBase
    from training.train import TrainError, TrainOptions
    from training.train import train as run_training

    settings = _settings()
    options = TrainOptions(
        base=base, run_id=run_id, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
        learning_rate=learning_rate, lora_r=lora_r, lora_alpha=lora_alpha, target_modules=target_modules,
        max_length=max_length, eval_steps=eval_steps, patience=patience, seed=seed, load_in_4bit=load_in_4bit,
        lora_dropout=lora_dropout, method=method.lower(), from_run=from_run,
    )
    from training.distributed import state

    main = state().is_main_process
    try:
        run_dir = run_training(settings, options, log=lambda m: typer.echo(m, err=True))
    except (TrainError, UnknownBase, ValueError) as exc:
        _fail(str(exc))
    if not main:  # the main process reports
        return
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if options.method == "sft" and metrics["train_loss_before"] is None:  # FSDP: no single-process probe
        typer.echo(f"run {run_dir.name}: {metrics['steps']} steps")
    elif options.method == "sft":
        typer.echo(f"run {run_dir.name}: {metrics['steps']} steps, train loss {metrics['train_loss_before']:.3f} → "
                   f"{metrics['train_loss_after']:.3f}, dev loss {metrics['eval_loss_before']:.3f} → "
                   f"{metrics['eval_loss_after']:.3f}")
    else:
        from training.train import describe_measures

        parent = json.loads((run_dir / "config.json").read_text())["parent_run"]
        typer.echo(f"run {run_dir.name} ({options.method.upper()} on {parent or 'the base'}): {metrics['steps']} steps; "
                   f"before: {describe_measures(metrics['before'])}; after: {describe_measures(metrics['after'])}")
    typer.echo(f"adapter: {run_dir / 'adapter'}\nnext: teambot eval --run {run_dir.name}")


def _train_query_adapter(run_id: str | None, max_steps: int, seed: int) -> None:
    from training.query_adapter import QueryAdapterError, QueryAdapterOptions, train_query_adapter

    options = QueryAdapterOptions(run_id=run_id, seed=seed)
    if max_steps > 0:
        options.steps = max_steps
    try:
        run_dir = train_query_adapter(_settings(), options, log=lambda m: typer.echo(m, err=True))
    except (QueryAdapterError, ValueError) as exc:
        _fail(str(exc))
    report = json.loads((run_dir / "report.json").read_text())
    before, after = report["retrieval"]["before"], report["retrieval"]["after"]
    typer.echo(f"run {run_dir.name}: held-out search over {after['questions']} questions: recall@1 "
               f"{before['recall@1']:.3f} → {after['recall@1']:.3f}, recall@5 {before['recall@5']:.3f} → "
               f"{after['recall@5']:.3f}, MRR {before['mrr']:.3f} → {after['mrr']:.3f}")
    gate = report["gate"]
    if gate["promotable"]:
        typer.echo(f"promotable; next: teambot publish --run {run_dir.name} --activate")
    else:
        typer.echo(f"not promotable: {'; '.join(gate['reasons'])}")


@app.command("eval")
def evaluate(
    run: str = typer.Option("latest", help="Run id under data_dir/runs, or latest."),
    max_new_tokens: int = typer.Option(96, min=1, help="Length cap of generated answers."),
    limit: Optional[int] = typer.Option(None, min=1, help="Score only the first N test examples (never promotes)."),
) -> None:
    """Score a run against its base and the active model on the test split (the promotion gate); writes report.json."""
    from training.evaluate import evaluate_run, format_table
    from training.runs import RunNotFound, resolve_run

    settings = _settings()
    try:
        run_dir = resolve_run(settings, run)
        report = evaluate_run(settings, run_dir, max_new_tokens=max_new_tokens, limit=limit,
                              log=lambda m: typer.echo(m, err=True))
    except (RunNotFound, ValueError) as exc:
        _fail(str(exc))
    typer.echo(format_table(report))
    typer.echo(f"report: {run_dir / 'report.json'}")


@app.command()
def publish(
    run: Optional[str] = typer.Option(None, help="Run id under data_dir/runs, or latest."),
    activate: bool = typer.Option(False, "--activate", help="Answer with it from the next question on (no restart)."),
    force: bool = typer.Option(False, "--force", help="Publish even if it was not evaluated or does not beat its base."),
    rollback: bool = typer.Option(False, "--rollback", help="Switch back to the previously active model."),
    retrieval: bool = typer.Option(False, "--retrieval", help="With --rollback: the query adapter, not the model."),
    quantize: str = typer.Option("auto", help="auto (q8_0 under 1B parameters, else q4_K_M), none, q4_K_M, q4_K_S, q8_0."),
    route: str = typer.Option("auto", help="auto (ADAPTER on the base where Ollama can), adapter, or merged."),
) -> None:
    """Publish a promotable run to Ollama as teambot-ft-<run>, score it as served, and optionally
    activate it; or roll the active model back."""
    from core import active_model

    settings = _settings()
    if rollback:
        if run:
            _fail("--rollback takes no --run")
        kind = "query_adapter" if retrieval else "model"
        model = active_model.rollback(settings, kind)
        scope = active_model.active_scope(settings, kind)
        label = "active query adapter" if retrieval else "active model"
        typer.echo(f"{label}: {model or 'none'}" + (f" (for {', '.join(sorted(scope))})" if scope and model else ""))
        return
    if retrieval:
        _fail("--retrieval goes with --rollback; a query adapter's run is published by its --run like a model's")
    if not run:
        _fail("which run? pass --run RUN (or --run latest), or --rollback")
    from training.publish import PublishRefused
    from training.publish import publish as publish_run
    from training.runs import RunNotFound, resolve_run

    try:
        run_dir = resolve_run(settings, run, any_kind=True)
        published = publish_run(settings, run_dir, activate=activate, force=force, quantize=quantize, route=route,
                                log=lambda m: typer.echo(m, err=True))
    except (RunNotFound, PublishRefused, ValueError) as exc:
        _fail(str(exc))
    detail = published.route + (f", {published.quantization}" if published.quantization else "")
    where = settings.data_dir / "query_adapters" if published.route == "query adapter" else settings.ollama_url
    typer.echo(f"published {published.model} ({detail}, {published.seconds:.0f}s) to {where}")
    if published.served:
        served = published.served
        from training.evaluate import format_served

        typer.echo(format_served(served))
    if activate and published.route == "query adapter":
        typer.echo(f"active query adapter: {published.model} for {', '.join(published.scope or [])} (was "
                   f"{published.previous_active or 'none'}); undo with `teambot publish --rollback --retrieval`")
    elif activate:
        typer.echo(f"active model: {published.model} for {', '.join(published.scope or [])}, {settings.model} for the "
                   f"other collections (was {published.previous_active}); undo with `teambot publish --rollback`")


@review_app.callback(invoke_without_command=True)
def review(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, help="Address to listen on (default TEAMBOT_REVIEW_HOST, loopback)."),
    port: Optional[int] = typer.Option(None, help="Port (default TEAMBOT_REVIEW_PORT)."),
) -> None:
    """Serve the review page (log in with a reviewer made by `teambot review add-user`)."""
    if ctx.invoked_subcommand:
        return
    from bots.wsgi import wsgi_server
    from review.app import create_app

    settings = _settings()
    if host:
        settings = settings.model_copy(update={"review_host": host})
    port = settings.review_port if port is None else port
    try:
        server = wsgi_server(create_app(settings), settings.review_host, port)
    except OSError as exc:
        _fail(f"cannot listen on {settings.review_host}:{port}: {exc.strerror or exc}")
    shown = f"[{settings.review_host}]" if ":" in settings.review_host else settings.review_host
    typer.echo(f"teambot: review page at http://{shown}:{server.server_port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@review_app.command("add-user")
def review_add_user(
    name: str,
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    role: str = typer.Option(None, "--role", help="admin (also manages reviewers) or reviewer (the default for a new one)."),
) -> None:
    """Create a reviewer (or set a new password, which also unlocks the account)."""
    from feedback.reviews import ReviewError, ReviewStore
    from feedback.store import FeedbackStore

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        created = ReviewStore(FeedbackStore.from_settings(_settings())).add_reviewer(name, password, role)
    except ReviewError as exc:
        _fail(str(exc))
    typer.echo(f"reviewer {name} {'created' if created else 'updated: new password, unlocked'}"
               + (f" ({role})" if role else ""))


@review_app.command("disable-user")
def review_disable_user(name: str) -> None:
    """Disable a reviewer: their sessions end and they cannot log in (`enable-user` undoes it)."""
    _set_disabled(name, True)


@review_app.command("enable-user")
def review_enable_user(name: str) -> None:
    """Let a disabled reviewer log in again."""
    _set_disabled(name, False)


def _set_disabled(name: str, disabled: bool) -> None:
    from feedback.reviews import ReviewError, ReviewStore
    from feedback.store import FeedbackStore

    try:
        changed = ReviewStore(FeedbackStore.from_settings(_settings())).set_disabled(name, disabled)
    except ReviewError as exc:
        _fail(str(exc))
    state = "disabled" if disabled else "enabled"
    typer.echo(f"reviewer {name} {state}" if changed else f"reviewer {name} was already {state}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
