"""Publish a fine-tuned run to Ollama as `teambot-ft-<run>` (`teambot publish`).

Llama bases are published as `FROM <base model>` + `ADAPTER adapter.gguf`: small, and the
base model holds the very weights the adapter was trained on (a packaged base's Ollama model is
created from its own GGUF when missing). The GGUF adapter is written here (training/gguf_adapter.py:
Ollama's own conversion of a llama safetensors adapter loses the q/k updates). Every other
base, or `--route merged`, is merged (merge_and_unload), saved as
safetensors with its tokenizer, imported from that directory and quantized to q4_K_M (q8_0
for models under 1B parameters, which lose their fine-tune at 4 bits). Either way the base's
chat format (TEMPLATE, SYSTEM, stop parameters) is set explicitly. With several Ollama replicas
behind the balancer, the model is created on each of them (merged once).

Only a run whose evaluation says promotable is published (`--force` overrides). The published
model is then scored as Ollama serves it (training/evaluate.score_served) and activated only if
that passes the gate too. Activation is a state file the bots read per question
(core/active_model.py), so no restart is needed; it carries the run's scope, the collections its
data came from, and the bots ask the model only questions from those collections. A run that
records no scope (trained before scopes existed) is never activated.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import ollama

from core.servers import has_model, ollama_model_urls
from core.settings import Settings
from training import runs
from core.active_model import active_model, model_name, set_active_model
from training.bases import BaseSpec, resolve_base, weights_dir

ADAPTER_ARCHITECTURES = {"llama"}  # those training/gguf_adapter.py writes
QUANTIZATIONS = ("q4_K_M", "q4_K_S", "q8_0")
# Below this size 4 bits cost the fine-tune: a Gemma 3 270M run that answered like its
# references in f16 and q8_0 abstained or copied documents as q4_K_M.
SMALL_MODEL_PARAMETERS = 1_000_000_000


class PublishRefused(RuntimeError):
    pass


ROUTES = ("auto", "adapter", "merged")


@dataclass
class Published:
    model: str
    route: str  # "adapter" or "merged"
    quantization: str | None
    previous_active: str | None
    seconds: float
    served: dict | None = None  # the served model's scores and verdict (None: not scored, --force)
    scope: list[str] | None = None  # the collections it may answer questions from


def check_quality(run_dir: Path, force: bool) -> None:
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        if force:
            return
        raise PublishRefused(
            f"run {run_dir.name} has not been evaluated: run `teambot eval --run {run_dir.name}` first "
            "(or publish anyway with --force)"
        )
    verdict = runs.read_json(report_path).get("gate") or {}
    if not verdict.get("promotable") and not force:
        raise PublishRefused(
            f"run {run_dir.name} is not promotable ({'; '.join(verdict.get('reasons', ['evaluated before the gate existed']))}); "
            "publish anyway with --force"
        )


def _clients(settings: Settings) -> dict[str, ollama.Client]:
    """A client for each Ollama server that must hold the model, by URL: every replica behind
    the balancer when several run (core.servers.ollama_model_urls), else the one at ollama_url."""
    clients = {}
    for url in ollama_model_urls(settings):
        client = clients[url] = ollama.Client(host=url)
        try:
            client.list()
        except (ConnectionError, ollama.ResponseError, OSError) as exc:
            for opened in clients.values():
                opened.close()
            raise PublishRefused(f"Ollama is not reachable at {url} ({exc}): start it with `teambot services up`") from None
    return clients


def _create(client: ollama.Client, log, **request) -> None:
    last = None
    try:
        for progress in client.create(stream=True, **request):
            if progress.status and progress.status != last:
                log(f"ollama: {progress.status}")
                last = progress.status
    except ollama.ResponseError as exc:
        raise PublishRefused(f"Ollama could not create {request['model']}: {exc.error}") from None


def _upload(client: ollama.Client, directory: Path, names: list[str]) -> dict[str, str]:
    return {name: client.create_blob(directory / name) for name in names}


def chat_format(spec: BaseSpec) -> dict:
    """TEMPLATE, SYSTEM and parameters for a model of this base (empty: the base model's own)."""
    if not spec.ollama_template:
        return {}
    return {"template": spec.ollama_template, "system": spec.ollama_system, "parameters": spec.ollama_parameters}


def ensure_ollama_base(settings: Settings, client: ollama.Client, spec: BaseSpec, log) -> bool:
    """The base model in this Ollama; created from the packaged GGUF (which training dequantized:
    the same weights) when it can be. False: not there and cannot be."""
    if has_model(client, spec.ollama_base):
        return True
    if not spec.ollama_base_from_gguf:
        return False
    gguf = spec.gguf(settings)
    log(f"creating the base model {spec.ollama_base} from {gguf.name}…")
    _create(client, log, model=spec.ollama_base, files={gguf.name: client.create_blob(gguf)}, **chat_format(spec))
    return True


def write_adapter_gguf(settings: Settings, spec: BaseSpec, run_dir: Path, log) -> dict:
    """The run's adapter as a GGUF file next to it (also usable with llama.cpp's --lora)."""
    from training.gguf_adapter import AdapterNotConvertible, write_gguf_adapter

    directory = weights_dir(settings, spec)
    if directory is None or not (directory / "config.json").is_file():
        raise PublishRefused(f"the config of {spec.name} is not on this machine: use --route merged")
    base_config = json.loads((directory / "config.json").read_text())
    target = run_dir / "adapter.gguf"
    log(f"writing the adapter as {target.name}…")
    try:
        digest = write_gguf_adapter(run_dir / "adapter", base_config, target)
    except AdapterNotConvertible as exc:
        raise PublishRefused(f"{exc}: use --route merged") from None
    return {"path": str(target), "sha256": digest, "bytes": target.stat().st_size}


def publish_adapter(client, spec: BaseSpec, gguf: dict, name: str, log) -> None:
    path = Path(gguf["path"])
    digest = client.create_blob(path)
    _create(client, log, model=name, from_=spec.ollama_base, adapters={path.name: digest}, **chat_format(spec))


def ollama_compatible_config(config: dict) -> dict:
    """transformers 5 writes `rope_parameters`; Ollama's importer reads the older flat keys."""
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" not in config:
        if "rope_theta" in rope:
            config["rope_theta"] = rope["rope_theta"]
            if rope.get("rope_type", "default") != "default":
                config.setdefault("rope_scaling", rope)
        else:  # per attention type (Gemma 3): global and sliding-window layers
            full, local = rope.get("full_attention", {}), rope.get("sliding_attention", {})
            if "rope_theta" in full:
                config["rope_theta"] = full["rope_theta"]
            if "rope_theta" in local:
                config["rope_local_base_freq"] = local["rope_theta"]
    return config


def choose_quantization(requested: str, parameters: int) -> str | None:
    if requested == "auto":
        return "q8_0" if parameters < SMALL_MODEL_PARAMETERS else "q4_K_M"
    if requested == "none":
        return None
    if requested not in QUANTIZATIONS:
        raise PublishRefused(f"unknown quantization {requested!r}: use auto, none or one of {', '.join(QUANTIZATIONS)}")
    return requested


def save_merged(settings: Settings, spec: BaseSpec, run_dir: Path, target: Path, log) -> int:
    """Base + adapter merged into `target` for Ollama's importer; returns the parameter count."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from training.models import load_base

    loaded = load_base(settings, spec, log=log)
    merged = PeftModel.from_pretrained(loaded.model, run_dir / "adapter").merge_and_unload()
    # bf16 halves what is uploaded to Ollama; its importer converts to f16/bf16 anyway.
    merged.to(torch.bfloat16).save_pretrained(target)
    AutoTokenizer.from_pretrained(run_dir / "adapter").save_pretrained(target)
    config_path = target / "config.json"
    config_path.write_text(json.dumps(ollama_compatible_config(json.loads(config_path.read_text())), indent=2))
    tokenizer_config = json.loads((target / "tokenizer_config.json").read_text())
    tokenizer_config.setdefault("add_bos_token", spec.add_bos)
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    # Ollama builds a SentencePiece tokenizer only from tokenizer.model (for hub ids: from the
    # local snapshot the weights were loaded from).
    source = weights_dir(settings, spec)
    if source and (source / "tokenizer.model").is_file():
        shutil.copy(source / "tokenizer.model", target / "tokenizer.model")
    return merged.num_parameters()


def publish_merged(
    settings: Settings, clients: dict[str, ollama.Client], spec: BaseSpec, run_dir: Path, name: str, quantize: str, log,
) -> str | None:
    """Merge once, then import into each Ollama server of `clients`; the quantization used."""
    target = run_dir / "merged"
    shutil.rmtree(target, ignore_errors=True)
    log("merging the adapter into the base weights…")
    parameters = save_merged(settings, spec, run_dir, target, log)
    quantization = choose_quantization(quantize, parameters)
    try:
        for url, client in clients.items():
            log(f"uploading the merged model to Ollama at {url} (quantized to {quantization or 'none'})…")
            files = _upload(client, target, sorted(p.name for p in target.iterdir() if p.is_file()))
            _create(client, log, model=name, files=files, quantize=quantization, **chat_format(spec))
    finally:
        shutil.rmtree(target, ignore_errors=True)  # Ollama keeps its own copy
    return quantization


def publish_query_adapter(settings: Settings, run_dir: Path, *, activate: bool, force: bool) -> Published:
    """A retrieval run's map copied to data_dir/query_adapters/ (every bot host reads it from the data
    dir) and, with `activate`, searched with for the questions of its scope from the next one on."""
    from pipeline.query_adapter import KIND, adapter_name, adapter_path

    check_quality(run_dir, force)
    started = time.monotonic()
    config = runs.read_json(run_dir / "config.json")
    scope = config.get("scope")
    if activate and not scope:
        raise PublishRefused(f"run {run_dir.name} records no scope")
    name = adapter_name(run_dir.name)
    target = adapter_path(settings, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(".partial")
    shutil.copyfile(run_dir / "query_adapter.npz", staging)
    staging.replace(target)  # whole or not at all: a bot may load it at any moment
    previous = set_active_model(settings, name, scope=scope, kind=KIND) if activate else None
    seconds = time.monotonic() - started
    runs.write_json(run_dir / "published.json", {
        "model": name, "route": "query adapter", "path": str(target), "activated": activate, "scope": scope,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
    })
    return Published(model=name, route="query adapter", quantization=None, previous_active=previous, seconds=seconds,
                     scope=scope)


def publish(
    settings: Settings, run_dir: Path, *, activate: bool = False, force: bool = False, quantize: str = "auto",
    route: str = "auto", log=print,
) -> Published:
    if (run_dir / "query_adapter.npz").is_file():
        return publish_query_adapter(settings, run_dir, activate=activate, force=force)
    check_quality(run_dir, force)
    choose_quantization(quantize, 0)  # reject a bad value before any work
    if route not in ROUTES:
        raise PublishRefused(f"unknown route {route!r}: use {', '.join(ROUTES)}")
    config = runs.read_json(run_dir / "config.json")
    scope = config.get("scope")
    if activate and not scope:  # not even with --force: its data may come from any channel
        raise PublishRefused(f"run {run_dir.name} records no scope (trained before scopes existed): train it again "
                             "from a fresh `teambot feedback export`")
    spec = resolve_base(settings, config["base"])
    name = model_name(run_dir.name)
    started = time.monotonic()
    quantization = None  # an adapter applies to the base model as Ollama already holds it
    gguf = None
    clients = _clients(settings)
    try:
        adapter_ok = config.get("arch") in ADAPTER_ARCHITECTURES and bool(spec.ollama_base)
        if route == "adapter" and not adapter_ok:
            raise PublishRefused(
                f"adapters are published for {', '.join(sorted(ADAPTER_ARCHITECTURES))} bases only, "
                f"and {spec.name} is {config.get('arch')}: use --route merged"
            )
        if route != "merged" and adapter_ok and all(
            ensure_ollama_base(settings, client, spec, log) for client in clients.values()
        ):
            route = "adapter"
            gguf = write_adapter_gguf(settings, spec, run_dir, log)
            for client in clients.values():
                publish_adapter(client, spec, gguf, name, log)
        elif route == "adapter":
            raise PublishRefused(f"the base model {spec.ollama_base} is not in Ollama: `ollama pull {spec.ollama_base}` first")
        else:
            route = "merged"
            quantization = publish_merged(settings, clients, spec, run_dir, name, quantize, log)
        if missing := [url for url, client in clients.items() if not has_model(client, name)]:
            raise PublishRefused(f"Ollama at {', '.join(missing)} did not list {name} after creating it")
    finally:
        for client in clients.values():
            client.close()
    served = None
    if (run_dir / "report.json").is_file():
        from training.evaluate import score_served

        if spec.ollama_base_from_gguf:  # the base as served, to compare with
            with ollama.Client(host=settings.ollama_url) as client:
                ensure_ollama_base(settings, client, spec, log)
        served = score_served(settings, run_dir, name, spec, log=log)
    refused = activate and served is not None and not served["passed"] and not force
    previous = set_active_model(settings, name, scope=scope) if activate and not refused else None
    seconds = time.monotonic() - started
    runs.write_json(run_dir / "published.json", {
        "model": name, "route": route, "quantization": quantization, "ollama_url": settings.ollama_url,
        "ollama_servers": list(clients), "activated": activate and not refused, "scope": scope, "gguf": gguf,
        "served": {k: v for k, v in served.items() if k != "answers"} if served else None,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
    })
    if refused:
        raise PublishRefused(
            f"published {name} but did not activate it: as Ollama serves it, it fails the gate "
            f"({'; '.join(served['reasons'])}). The active model is still {active_model(settings)}."
        )
    return Published(model=name, route=route, quantization=quantization, previous_active=previous,
                     seconds=seconds, served=served, scope=scope)
