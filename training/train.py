"""LoRA fine-tuning on the exported feedback dataset (`teambot train`): supervised (SFT) by
default, or preference training (`--method dpo|kto`, training/preference_trainers.py) on top of an
SFT run. Runs in one process or several (training/distributed.py).

Examples are given to TRL's SFTTrainer as conversational prompt/completion pairs: the prompt
is the chat the model saw, the completion the assistant turn to learn. TRL then computes the
loss on the completion only (the prompt's labels are -100), with any chat template — unlike
`assistant_only_loss`, which needs `{% generation %}` markers most templates lack. The run
checks that masking on a real example before training.

CPU: float32, no gradient checkpointing (TRL's defaults of bf16 and checkpointing make CPU
steps ~15x slower). CUDA: bf16, gradient checkpointing, optional 4-bit (QLoRA).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from core.settings import Settings
from training import distributed, runs
from training.bases import resolve_base
from training.evaluate import completion_loss, preference_scores
from training.splits import SPLITS, export_dir, read_split, write_split
from training.preference import METHODS as PREFERENCE_METHODS

METHODS = ("sft", *PREFERENCE_METHODS)


class TrainError(RuntimeError):
    pass


@dataclass
class TrainOptions:
    base: str | None = None  # default: settings.train_base_model / the served model's weights
    run_id: str | None = None
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"  # or a comma-separated list such as "q_proj,v_proj"
    max_length: int | None = None  # default: settings.train_max_tokens
    eval_steps: int = 10
    patience: int = 3  # evaluations without a better eval loss before stopping
    probe_examples: int = 16  # training examples whose loss is measured before and after
    seed: int = 42
    load_in_4bit: bool = False
    method: str = "sft"  # sft, dpo or kto
    from_run: str = "auto"  # dpo/kto: the SFT run to start from (auto: the latest of this base; none: the base)


def to_prompt_completion(example: dict) -> dict:
    messages = example["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def load_export(settings: Settings, method: str = "sft") -> tuple[dict[str, list[dict]], dict]:
    """The exported splits (train, dev, test) of `method`'s data, and the export's summary."""
    root = export_dir(settings)
    folder = root if method == "sft" else root / method
    missing = [s for s in SPLITS if not (folder / f"{s}.jsonl").is_file()]
    if missing:
        hint = "" if method == "sft" or not (root / "train.jsonl").is_file() else " (exported before preference data existed)"
        raise TrainError(f"no exported {method.upper()} dataset in {folder}{hint}: run `teambot feedback export` first")
    summary = runs.read_json(root / "summary.json") if (root / "summary.json").is_file() else {}
    return {s: read_split(folder / f"{s}.jsonl") for s in SPLITS}, summary


def parent_run(settings: Settings, spec_name: str, from_run: str, scope: list[str]) -> Path | None:
    """The SFT run a preference run starts from: named, the latest SFT run of the same base and
    scope ("auto"), or none. A parent trained on other collections would carry them into this run."""
    if from_run == "none":
        return None
    if from_run != "auto":
        run_dir = runs.resolve_run(settings, from_run)
        config = runs.read_json(run_dir / "config.json")
        if config["base"] != spec_name:
            raise TrainError(f"run {from_run} fine-tuned {config['base']}, not {spec_name}")
        if config.get("scope") != scope:
            raise TrainError(f"run {from_run} learned from {', '.join(config.get('scope') or ['an unscoped export'])}, "
                             f"not {', '.join(scope)}: export its scope again, or start from the base (--from-run none)")
        return run_dir
    candidates = []
    for config_path in runs.runs_dir(settings).glob("*/config.json"):
        config = runs.read_json(config_path)
        if (config.get("method", "sft") == "sft" and config["base"] == spec_name and config.get("scope") == scope
                and (config_path.parent / "adapter").is_dir()):
            candidates.append(config_path.parent)
    return max(candidates, key=lambda p: (p / "adapter").stat().st_mtime, default=None)


def build_trainer(loaded, train_rows: list[dict], eval_rows: list[dict], options: TrainOptions, output_dir: Path):
    """An SFTTrainer with a fresh LoRA adapter on `loaded.model` (nothing is trained yet)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import EarlyStoppingCallback
    from trl import SFTConfig

    cuda = loaded.device == "cuda"
    targets = options.target_modules
    lora = LoraConfig(
        task_type="CAUSAL_LM", r=options.lora_r, lora_alpha=options.lora_alpha, lora_dropout=options.lora_dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
    )
    args = SFTConfig(
        output_dir=str(output_dir), seed=options.seed, data_seed=options.seed,
        num_train_epochs=options.epochs, max_steps=options.max_steps,
        per_device_train_batch_size=options.batch_size, per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum, learning_rate=options.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        max_length=options.max_length, packing=False, completion_only_loss=True, assistant_only_loss=False,
        bf16=cuda and torch.cuda.is_bf16_supported(), fp16=False, use_cpu=not cuda,
        gradient_checkpointing=cuda, dataloader_pin_memory=cuda, dataloader_num_workers=0,
        eval_strategy="steps", eval_steps=options.eval_steps, save_strategy="steps", save_steps=options.eval_steps,
        save_total_limit=2, load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        logging_steps=1, logging_first_step=True, report_to=[], disable_tqdm=False,
    )
    model = loaded.model
    if options.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return _trainer_class()(
        model=model, args=args, processing_class=loaded.tokenizer, peft_config=lora,
        train_dataset=Dataset.from_list([to_prompt_completion(e) for e in train_rows]),
        eval_dataset=Dataset.from_list([to_prompt_completion(e) for e in eval_rows]),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=options.patience)],
    )


def _trainer_class():
    import torch
    from trl import SFTTrainer

    class CompletionLossTrainer(SFTTrainer):
        """Runs the LM head on answer positions only, on every device.

        TRL's fused head skips prompt positions only where Triton runs (CUDA); on CPU it scores
        every position, and Gemma 3's 262k-row head is most of each step's work while answers
        are ~10% of the tokens. Models that scale their logits keep TRL's path.
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # Under DDP the model is wrapped, and the gradient sync hooks on its forward; on CUDA
            # TRL's fused head already skips prompt positions. TRL's loss (through transformers,
            # which scales it across processes) serves both.
            if self.accelerator.num_processes > 1 or model.device.type != "cpu":
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
            text_config = causal_lm.config.get_text_config()
            if return_outputs or any(
                getattr(text_config, k, None) is not None
                for k in ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
            ):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            hidden = causal_lm.base_model(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), use_cache=False
            ).last_hidden_state[:, :-1]
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            logits = causal_lm.get_output_embeddings()(hidden[mask]).float()
            cap = getattr(text_config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            nll = torch.nn.functional.cross_entropy(logits, labels[mask], reduction="sum")
            return nll / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)

    return CompletionLossTrainer


def label_split(trainer, tokenizer, index: int = 0) -> tuple[str, str]:
    """(text the loss ignores, text the loss is computed on) for one prepared training example."""
    row = trainer.train_dataset[index]
    ids, labels = row["input_ids"], row["labels"]
    ignored = tokenizer.decode([i for i, l in zip(ids, labels) if l == -100])
    learned = tokenizer.decode([l for l in labels if l != -100])
    return ignored, learned


def check_label_mask(trainer, tokenizer, train_rows: list[dict]) -> None:
    """The loss must cover the answer and nothing of the prompt; refuse to train otherwise."""
    ignored, learned = label_split(trainer, tokenizer)
    # The prepared dataset is shuffled: find which example row 0 is by its answer text.
    answers = [e["messages"][-1]["content"].strip() for e in train_rows]
    if not any(learned.strip().startswith(a[:200]) for a in answers):
        raise TrainError(f"completion masking is off: the loss would be computed on {learned[:200]!r}")
    questions = [e["messages"][-2]["content"][-200:] for e in train_rows]
    if any(q and q in learned for q in questions):
        raise TrainError("completion masking is off: the prompt is inside the trained labels")


def _history(log_history: list[dict]) -> dict:
    return {
        "train_loss": [{"step": h["step"], "loss": h["loss"]} for h in log_history if "loss" in h],
        "eval_loss": [{"step": h["step"], "loss": h["eval_loss"]} for h in log_history if "eval_loss" in h],
    }


def train(settings: Settings, options: TrainOptions | None = None, log=print) -> Path:
    """Fine-tune on `data_dir/sft/` (its preference data for dpo/kto); returns the run directory.

    Under a launcher every process runs this; only the main one writes."""
    import peft
    import torch
    import transformers
    import trl
    from transformers import set_seed

    from training.models import load_base

    options = options or TrainOptions()
    if options.method not in METHODS:
        raise TrainError(f"unknown method {options.method!r}: use {', '.join(METHODS)}")
    process = distributed.state()
    main = process.is_main_process
    log = log if main else (lambda message: None)
    splits, export_summary = load_export(settings)  # the gate's test split, whatever the method
    preference = load_export(settings, options.method)[0] if options.method != "sft" else None
    # The collections the data came from: where the model may answer once published (core/active_model.py).
    scope = (export_summary.get("scope") or {}).get("collections")
    if not scope:
        raise TrainError("the export records no scope (it was made before scopes existed, from every collection "
                         "and channel): run `teambot feedback export` again")
    trained_on = preference or splits
    train_rows, eval_rows = trained_on["train"], trained_on["dev"]  # dev: early stopping; test: the gate only
    if not train_rows:
        raise TrainError(f"the export has no {options.method.upper()} training examples: collect more votes")
    spec = resolve_base(settings, options.base)
    parent = parent_run(settings, spec.name, options.from_run, scope) if preference else None
    options.max_length = options.max_length or settings.train_max_tokens
    run_id = distributed.share(runs.check_run_id(options.run_id or runs.new_run_id()), process)
    run_dir = runs.runs_dir(settings) / run_id
    # Decided by the main process and told to all: a process left waiting in a collective hangs.
    if distributed.share(main and run_dir.exists(), process):
        raise TrainError(f"run {run_id!r} already exists in {run_dir}")
    set_seed(options.seed)

    started = time.monotonic()
    loaded = load_base(settings, spec, load_in_4bit=options.load_in_4bit, log=log)
    load_s = time.monotonic() - started
    log(f"loaded {spec.name} from {loaded.source} on {loaded.device} in {load_s:.1f}s"
        + (f", {process.num_processes} processes" if process.num_processes > 1 else ""))
    config = {
        "run_id": run_id, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": options.method, "parent_run": parent.name if parent else None,
        "base": spec.name, "base_source": str(loaded.source), "arch": loaded.model.config.model_type,
        "device": loaded.device, "processes": process.num_processes, "options": asdict(options), "scope": scope,
        "dataset": {**{s: len(rows) for s, rows in trained_on.items()}, "export": export_summary},
        "versions": {m.__name__: m.__version__ for m in (torch, transformers, peft, trl)},
    }
    pairs = preference if options.method == "dpo" else _preference_pairs(settings)  # already read for DPO
    if main:
        run_dir.mkdir(parents=True)
        runs.write_json(run_dir / "config.json", config)
        for split, rows in splits.items():  # SFT rows: the answer metrics of the gate read test.jsonl
            write_split(run_dir / f"{split}.jsonl", rows)
        if preference:
            for split, rows in preference.items():
                write_split(run_dir / f"{options.method}-{split}.jsonl", rows)
        write_split(run_dir / "pairs-test.jsonl", pairs["test"])  # preference accuracy in the gate

    if preference:
        from training import preference_trainers

        trainer = preference_trainers.build(options.method, loaded, train_rows, eval_rows, options,
                                            run_dir / "checkpoints", parent / "adapter" if parent else None)
    else:
        trainer = build_trainer(loaded, train_rows, eval_rows, options, run_dir / "checkpoints")
        check_label_mask(trainer, loaded.tokenizer, train_rows)
    distributed.single_process_gpus(trainer.args, log)
    tokenizer = loaded.tokenizer
    probe = _probe(options, train_rows, pairs)
    # Sharded weights (FSDP) answer a forward only with every process taking part: no probe then.
    measure = main and not trainer.is_fsdp_enabled
    before = _measure(trainer.model, tokenizer, probe, eval_rows, pairs, preference) if measure else {}
    log("before training: " + describe_measures(before))
    started = time.monotonic()
    result = trainer.train()
    train_s = time.monotonic() - started
    trainer.accelerator.wait_for_everyone()
    if trainer.is_fsdp_enabled:  # every process hands in its shard; the main one writes
        trainer.save_model(str(run_dir / "adapter"))
    if main:
        after = _measure(trainer.model, tokenizer, probe, eval_rows, pairs, preference) if measure else {}
        log("after training: " + describe_measures(after))
        if not trainer.is_fsdp_enabled:
            trainer.model.save_pretrained(run_dir / "adapter", selected_adapters=["default"])
        loaded.tokenizer.save_pretrained(run_dir / "adapter")
        steps = result.global_step
        if preference:
            from training import preference_trainers

            metrics = {"steps": steps, "epochs": trainer.state.epoch, "before": before, "after": after,
                       **preference_trainers.history(trainer.state.log_history)}
        else:
            metrics = {
                "steps": steps, "epochs": trainer.state.epoch, "best_step": _best_step(trainer.state),
                "stopped_early": steps < trainer.state.max_steps,
                "train_loss_before": before.get("train"), "train_loss_after": after.get("train"), "probe_examples": len(probe),
                "eval_loss_before": before.get("eval"), "eval_loss_after": after.get("eval"),
                **_history(trainer.state.log_history),
            }
        runs.write_json(run_dir / "metrics.json", metrics)
        config["timings"] = {"load_s": round(load_s, 2), "train_s": round(train_s, 2), "step_s": round(train_s / max(steps, 1), 2)}
        runs.write_json(run_dir / "config.json", config)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the best adapter is saved above
    trainer.accelerator.wait_for_everyone()
    return run_dir


def _preference_pairs(settings: Settings) -> dict[str, list[dict]]:
    """The exported DPO pairs per split (none from an export older than preference data)."""
    folder = export_dir(settings) / "dpo"
    return {s: read_split(folder / f"{s}.jsonl") if (folder / f"{s}.jsonl").is_file() else [] for s in SPLITS}


def _probe(options: TrainOptions, train_rows: list[dict], pairs: dict) -> list[dict]:
    return (train_rows if options.method == "sft" else pairs["train"])[: options.probe_examples]


def _measure(model, tokenizer, probe: list[dict], eval_rows: list[dict], pairs: dict, preference) -> dict:
    """SFT: completion loss on training and dev examples; DPO/KTO: preference accuracy and
    margin on training and dev pairs."""
    if not preference:
        return {"train": completion_loss(model, tokenizer, probe), "eval": completion_loss(model, tokenizer, eval_rows)}
    return {"train": preference_scores(model, tokenizer, probe), "dev": preference_scores(model, tokenizer, pairs["dev"])}


def describe_measures(measured: dict) -> str:
    parts = []
    for split, value in measured.items():
        if isinstance(value, float):
            parts.append(f"{split} loss {value:.3f}")
        elif value:
            parts.append(f"{split} pairs: chosen likelier in {value['accuracy']:.0%}, margin {value['margin']:.2f}")
    return ", ".join(parts) or "no pairs to measure"


def _best_step(state) -> int | None:
    checkpoint = state.best_model_checkpoint
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None
