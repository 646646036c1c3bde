"""The `teambot` command. Heavy imports (torch, haystack, bots) happen inside each verb."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from teambot.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="teambot: answers questions in Slack and Discord from your team's documents, with sources.",
    no_args_is_help=True,
    add_completion=False,
)
services_app = typer.Typer(help="Run the real Weaviate and Ollama servers locally.", no_args_is_help=True)
feedback_app = typer.Typer(help="Inspect and export 👍/👎 feedback.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(feedback_app, name="feedback")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(code)


# ---------------------------------------------------------------- services


@services_app.command("up")
def services_up(
    model: bool = typer.Option(True, help="Also import the dev chat model into Ollama."),
) -> None:
    """Build (first run only) and start Weaviate and Ollama on loopback; import the dev model."""
    from teambot import devmodel, services

    settings = _settings()
    for service in services.SERVICES:
        started = time.monotonic()
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


@services_app.command("down")
def services_down() -> None:
    """Stop the servers this command started (never an external one)."""
    from teambot import services

    settings = _settings()
    for service in services.SERVICES:
        typer.echo(f"{service.name}: {services.stop(service, settings)}")


@services_app.command("status")
def services_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Report whether each server answers; exits 1 if one does not."""
    from teambot import services

    report = services.status(_settings())
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        for name, info in report.items():
            state = "ready" if info["ready"] else "DOWN"
            typer.echo(f"{name:9} {state:6} {info['url']}  managed={info['managed']}")
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


def _not_built(verb: str, issue: str) -> None:
    _fail(f"`teambot {verb}` is not built yet ({issue}).", code=2)


@app.command()
def ingest(paths: list[Path] = typer.Argument(..., help="Files or folders to index.")) -> None:
    """Index documents into Weaviate (incremental)."""
    _not_built("ingest", "RAG pipeline")


@app.command()
def ask(question: str) -> None:
    """Answer a question from the indexed documents, with sources."""
    _not_built("ask", "RAG pipeline")


@app.command()
def slack() -> None:
    """Run the Slack bot."""
    _not_built("slack", "Slack adapter")


@app.command()
def discord() -> None:
    """Run the Discord bot."""
    _not_built("discord", "Discord adapter")


@feedback_app.command("stats")
def feedback_stats() -> None:
    """Counts of 👍/👎 by model."""
    _not_built("feedback stats", "feedback store")


@feedback_app.command("export")
def feedback_export() -> None:
    """Build the SFT dataset from rated answers."""
    _not_built("feedback export", "training loop")


@app.command()
def train() -> None:
    """LoRA fine-tune the model on exported feedback."""
    _not_built("train", "training loop")


@app.command("eval")
def evaluate() -> None:
    """Compare a fine-tuned model with its base."""
    _not_built("eval", "training loop")


@app.command()
def publish() -> None:
    """Publish a fine-tuned model to Ollama."""
    _not_built("publish", "training loop")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
