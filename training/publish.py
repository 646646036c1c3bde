"""Publish a fine-tuned run to Ollama as `teambot-ft-<run>` (`teambot publish`).

Ollama v0.24 imports safetensors LoRA adapters only for llama and gemma2 bases: those are
published as `FROM <base model>` + `ADAPTER` (small, and the base's TEMPLATE, SYSTEM and
parameters carry over). Every other base is merged (merge_and_unload), saved as safetensors
with its tokenizer, imported from that directory and quantized to q4_K_M, with the base's
chat format set explicitly (q8_0 instead for models under 1B parameters, which lose
their fine-tune at 4 bits). With several Ollama replicas behind the balancer, the model is
created on each of them (merged once). Activation is a state file the bots read per
question (core/active_model.py), so no restart is needed.
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
from core.active_model import set_active_model
from training.bases import BaseSpec, cached_dir, resolve_base

ADAPTER_ARCHITECTURES = {"llama", "gemma2"}
QUANTIZATIONS = ("q4_K_M", "q4_K_S", "q8_0")
# Below this size 4 bits cost the fine-tune: a Gemma 3 270M run that answered like its
# references in f16 and q8_0 abstained or copied documents as q4_K_M.
SMALL_MODEL_PARAMETERS = 1_000_000_000


class PublishRefused(RuntimeError):
    pass


@dataclass
class Published:
    model: str
    route: str  # "adapter" or "merged"
    quantization: str | None
    previous_active: str | None
    seconds: float


def model_name(run_id: str) -> str:
    return f"teambot-ft-{run_id}".lower()


def check_quality(run_dir: Path, force: bool) -> None:
    report_path = run_dir / "report.json"
    if not report_path.is_file():
        if force:
            return
        raise PublishRefused(
            f"run {run_dir.name} has not been evaluated: run `teambot eval --run {run_dir.name}` first "
            "(or publish anyway with --force)"
        )
    report = runs.read_json(report_path)
    if not report.get("beats_base") and not force:
        raise PublishRefused(
            f"run {run_dir.name} does not beat its base model ({'; '.join(report.get('reasons', []))}); "
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


def publish_adapter(client, spec: BaseSpec, run_dir: Path, name: str, log) -> None:
    adapter = run_dir / "adapter"
    files = _upload(client, adapter, ["adapter_model.safetensors", "adapter_config.json"])
    # FROM an existing model: Ollama copies its TEMPLATE, SYSTEM and parameters.
    _create(client, log, model=name, from_=spec.ollama_base, adapters=files)


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
    # Ollama builds a SentencePiece tokenizer only from tokenizer.model.
    source = cached_dir(settings, spec) if spec.gguf else Path(str(spec.hf_id)).expanduser()
    if (source / "tokenizer.model").is_file():
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
            request = {"model": name, "files": files, "quantize": quantization}
            if spec.ollama_template:
                request.update(template=spec.ollama_template, system=spec.ollama_system, parameters=spec.ollama_parameters)
            _create(client, log, **request)
    finally:
        shutil.rmtree(target, ignore_errors=True)  # Ollama keeps its own copy
    return quantization


def publish(
    settings: Settings, run_dir: Path, *, activate: bool = False, force: bool = False, quantize: str = "auto", log=print,
) -> Published:
    check_quality(run_dir, force)
    choose_quantization(quantize, 0)  # reject a bad value before any work
    config = runs.read_json(run_dir / "config.json")
    spec = resolve_base(settings, config["base"])
    name = model_name(run_dir.name)
    started = time.monotonic()
    quantization = None  # an adapter applies to the base model as Ollama already holds it
    clients = _clients(settings)
    try:
        if (config.get("arch") in ADAPTER_ARCHITECTURES and spec.ollama_base
                and all(has_model(client, spec.ollama_base) for client in clients.values())):
            route = "adapter"
            for client in clients.values():
                publish_adapter(client, spec, run_dir, name, log)
        else:
            route = "merged"
            quantization = publish_merged(settings, clients, spec, run_dir, name, quantize, log)
        if missing := [url for url, client in clients.items() if not has_model(client, name)]:
            raise PublishRefused(f"Ollama at {', '.join(missing)} did not list {name} after creating it")
    finally:
        for client in clients.values():
            client.close()
    previous = set_active_model(settings, name) if activate else None
    seconds = time.monotonic() - started
    runs.write_json(run_dir / "published.json", {
        "model": name, "route": route, "quantization": quantization, "ollama_url": settings.ollama_url,
        "ollama_servers": list(clients),
        "activated": activate,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
    })
    return Published(model=name, route=route, quantization=quantization, previous_active=previous, seconds=seconds)
