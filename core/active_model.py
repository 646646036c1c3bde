"""Which Ollama model answers questions right now, switchable without restarting the bots.

`teambot publish --activate` writes the model name to `data_dir/active_model.json`; the
answering pipeline calls `model_for(settings, collections)` per question, so the switch takes
effect on the next question. Earlier names are kept, newest last, for `teambot publish --rollback`.

A fine-tune has learned from the answers of some collections only (its scope, written with the
activation): it answers a question only if every collection the question searches is in that
scope, the configured model (`settings.model`) the rest. A model activated without a scope (by
hand, or before scopes existed) may have learned from any channel: it answers nothing.

Standard library only: this module sits on the bot's hot path and must never pull in torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

STATE_FILE = "active_model.json"
# A query adapter (training/query_adapter.py) is published, activated and rolled back the same way,
# with its own state: it maps question embeddings for the collections of its scope, none else.
STATE_FILES = {"model": STATE_FILE, "query_adapter": "active_query_adapter.json"}
HISTORY_LIMIT = 20
EVENTS_LIMIT = 200


def model_name(run_id: str) -> str:
    """The Ollama name a fine-tuning run is published under."""
    return f"teambot-ft-{run_id}".lower()


def state_path(settings, kind: str = "model") -> Path:
    return Path(settings.data_dir) / STATE_FILES[kind]


def _fallback(settings, kind: str) -> str:
    """What answers with nothing activated: the configured model; no query adapter."""
    return settings.model if kind == "model" else ""


def _read(settings, kind: str = "model") -> dict:
    try:
        state = json.loads(state_path(settings, kind).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or half-written by hand: fall back to the configured model
    return state if isinstance(state, dict) else {}


def _write(settings, state: dict, kind: str = "model") -> None:
    path = state_path(settings, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a bot reading concurrently never sees a partial file.
    fd, tmp = tempfile.mkstemp(prefix=".active_model.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(state, out, indent=2)
    os.replace(tmp, path)


def active_model(settings, kind: str = "model") -> str:
    """The model named by the state file, else `settings.model` (for a query adapter: "")."""
    model = _read(settings, kind).get("model")
    return model if isinstance(model, str) and model.strip() else _fallback(settings, kind)


def active_scope(settings, kind: str = "model") -> frozenset[str] | None:
    """The collections the active model was fine-tuned on; None: none recorded."""
    return _scope(_read(settings, kind))


def _scope(state: dict) -> frozenset[str] | None:
    scope = state.get("scope")
    return frozenset(c for c in scope if isinstance(c, str)) if isinstance(scope, list) else None


def model_for(settings, collections: str | Iterable[str], kind: str = "model") -> str:
    """The model that answers a question searching `collections` (one name, several, or joined
    with "+" as answers are recorded): the active model if they are all in its scope, else
    `settings.model` (for a query adapter: "", none)."""
    state = _read(settings, kind)  # once: a switch between two reads could pair a model with another's scope
    model, scope = state.get("model"), _scope(state)
    asked = set(collections.split("+") if isinstance(collections, str) else collections)
    if isinstance(model, str) and model.strip() and scope is not None and asked and asked <= scope:
        return model
    return _fallback(settings, kind)


def history(settings, kind: str = "model") -> list[str]:
    """Models active before the current one, oldest first."""
    previous = _read(settings, kind).get("previous", [])
    return [m for m in previous if isinstance(m, str)] if isinstance(previous, list) else []


def set_active_model(settings, name: str, scope: Iterable[str] | None = None, kind: str = "model") -> str:
    """Make `name` the answering model for the collections of `scope` (None: for none); returns
    the model it replaces."""
    name = name.strip()
    if not name:
        raise ValueError("model name is empty")
    current = active_model(settings, kind)
    previous = history(settings, kind)
    if current != name:
        # From no query adapter: rolling back past the first one leaves none active, as before it.
        previous = (previous + [current])[-HISTORY_LIMIT:]
    # Each model keeps its own scope, so that a rollback restores it with the model.
    scopes = {m: s for m, s in _scopes(settings, kind).items() if m in previous and m != name}
    if scope is not None:
        scopes[name] = sorted(set(scope))
    _write(settings, {"model": name, **_scoped(scopes, name), "previous": previous, "updated_at": _now(),
                      "events": _logged(settings, "activated", name, kind)}, kind)
    return current


def _scopes(settings, kind: str) -> dict[str, list[str]]:
    scopes = _read(settings, kind).get("scopes", {})
    return {m: s for m, s in scopes.items() if isinstance(s, list)} if isinstance(scopes, dict) else {}


def _scoped(scopes: dict[str, list[str]], model: str) -> dict:
    """The state's "scope" (the active model's) and "scopes" (those kept for a rollback) keys."""
    return {**({"scope": scopes[model]} if model in scopes else {}), "scopes": scopes}


def events(settings, kind: str = "model") -> list[dict]:
    """Activations and rollbacks, oldest first: {"at", "event", "model"} (the review page's timeline)."""
    logged = _read(settings, kind).get("events", [])
    return [e for e in logged if isinstance(e, dict)] if isinstance(logged, list) else []


def _logged(settings, event: str, model: str, kind: str) -> list[dict]:
    return (events(settings, kind) + [{"at": _now(), "event": event, "model": model}])[-EVENTS_LIMIT:]


def rollback(settings, kind: str = "model") -> str:
    """Go back to the previously active model (finally `settings.model`, or no query adapter);
    returns the new one."""
    previous = history(settings, kind)
    fallback = _fallback(settings, kind)
    model = previous.pop() if previous else fallback
    logged = _logged(settings, "rolled back", model or "no query adapter", kind)
    # Back to the configured model with nothing before it: no "model", so TEAMBOT_MODEL rules again.
    scopes = {m: s for m, s in _scopes(settings, kind).items() if m in previous or m == model}
    state = {"previous": previous, "updated_at": _now(), "events": logged}
    if model and not (model == fallback and not previous):
        state = {"model": model, **_scoped(scopes, model), **state}
    _write(settings, state, kind)
    return model


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
