"""LoRA supervised fine-tuning on the exported feedback dataset (`teambot train`).

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
from training import runs
from training.bases import resolve_base
from training.evaluate import completion_loss
from training.export import SPLITS, export_dir, read_split, write_split


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


def to_prompt_completion(example: dict) -> dict:
    messages = example["messages"]
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def load_export(settings: Settings) -> tuple[dict[str, list[dict]], dict]:
    """The exported splits (train, dev, test) and the export's summary."""
    root = export_dir(settings)
    missing = [s for s in SPLITS if not (root / f"{s}.jsonl").is_file()]
    if missing:
        raise TrainError(f"no exported dataset in {root} (no {', '.join(missing)} split): run `teambot feedback export` first")
    summary = runs.read_json(root / "summary.json") if (root / "summary.json").is_file() else {}
    return {s: read_split(root / f"{s}.jsonl") for s in SPLITS}, summary


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
    """Fine-tune on `data_dir/sft/`; returns the run directory."""
    import peft
    import torch
    import transformers
    import trl
    from transformers import set_seed

    from training.models import load_base

    options = options or TrainOptions()
    splits, export_summary = load_export(settings)
    train_rows, eval_rows = splits["train"], splits["dev"]  # dev: early stopping; test: the gate only
    spec = resolve_base(settings, options.base)
    options.max_length = options.max_length or settings.train_max_tokens
    run_id = runs.check_run_id(options.run_id or runs.new_run_id())
    run_dir = runs.runs_dir(settings) / run_id
    if run_dir.exists():
        raise TrainError(f"run {run_id!r} already exists in {run_dir}")
    run_dir.mkdir(parents=True)
    set_seed(options.seed)

    started = time.monotonic()
    loaded = load_base(settings, spec, load_in_4bit=options.load_in_4bit, log=log)
    load_s = time.monotonic() - started
    log(f"loaded {spec.name} from {loaded.source} on {loaded.device} in {load_s:.1f}s")
    config = {
        "run_id": run_id, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base": spec.name, "base_source": str(loaded.source), "arch": loaded.model.config.model_type,
        "device": loaded.device, "options": asdict(options),
        "dataset": {**{s: len(rows) for s, rows in splits.items()}, "export": export_summary},
        "versions": {m.__name__: m.__version__ for m in (torch, transformers, peft, trl)},
    }
    runs.write_json(run_dir / "config.json", config)
    for split, rows in splits.items():
        write_split(run_dir / f"{split}.jsonl", rows)

    trainer = build_trainer(loaded, train_rows, eval_rows, options, run_dir / "checkpoints")
    check_label_mask(trainer, loaded.tokenizer, train_rows)
    tokenizer = loaded.tokenizer
    probe = train_rows[: options.probe_examples]
    before = {"train": completion_loss(trainer.model, tokenizer, probe), "eval": completion_loss(trainer.model, tokenizer, eval_rows)}
    log(f"loss before training: train {before['train']:.3f}, eval {before['eval']:.3f}")
    started = time.monotonic()
    result = trainer.train()
    train_s = time.monotonic() - started
    after = {"train": completion_loss(trainer.model, tokenizer, probe), "eval": completion_loss(trainer.model, tokenizer, eval_rows)}
    trainer.model.save_pretrained(run_dir / "adapter")
    loaded.tokenizer.save_pretrained(run_dir / "adapter")
    steps = result.global_step
    metrics = {
        "steps": steps, "epochs": trainer.state.epoch, "best_step": _best_step(trainer.state),
        "stopped_early": steps < trainer.state.max_steps,
        "train_loss_before": before["train"], "train_loss_after": after["train"], "probe_examples": len(probe),
        "eval_loss_before": before["eval"], "eval_loss_after": after["eval"],
        **_history(trainer.state.log_history),
    }
    runs.write_json(run_dir / "metrics.json", metrics)
    config["timings"] = {"load_s": round(load_s, 2), "train_s": round(train_s, 2), "step_s": round(train_s / max(steps, 1), 2)}
    runs.write_json(run_dir / "config.json", config)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the best adapter is saved above
    return run_dir


def _best_step(state) -> int | None:
    checkpoint = state.best_model_checkpoint
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None
