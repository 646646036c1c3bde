"""DPO and KTO with TRL (`teambot train --method dpo|kto`), on top of an SFT adapter.

The SFT run's adapter keeps training (same rank and targets, so the result is one LoRA adapter on
the base and publishes like any SFT run); TRL copies it into a frozen "ref" adapter that is the
reference model (β keeps the policy near it). Without an SFT run a fresh adapter is trained and
the reference is the base (adapter disabled). Preference steps look at two completions per
example (or an extra KL completion for KTO), so they cost about twice an SFT step.
"""

from __future__ import annotations

from pathlib import Path

from training.preference import trainer_row

BETA = 0.1  # TRL's default; the strength of the pull towards the reference model


def build(method: str, loaded, train_rows: list[dict], eval_rows: list[dict], options, output_dir: Path,
          parent_adapter: Path | None):
    import torch
    from datasets import Dataset
    from peft import LoraConfig, PeftModel

    cuda = loaded.device == "cuda"
    common = dict(
        output_dir=str(output_dir), seed=options.seed, data_seed=options.seed,
        num_train_epochs=options.epochs, max_steps=options.max_steps,
        per_device_train_batch_size=options.batch_size, per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum, learning_rate=options.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_length=options.max_length, beta=BETA,
        bf16=cuda and torch.cuda.is_bf16_supported(), fp16=False, use_cpu=not cuda,
        gradient_checkpointing=cuda, dataloader_pin_memory=cuda, dataloader_num_workers=0,
        # Dev pairs are scored for the log; the last step is kept (few steps, no checkpoint juggling
        # of the extra "ref" adapter).
        eval_strategy="steps" if eval_rows else "no", eval_steps=options.eval_steps, save_strategy="no",
        logging_steps=1, logging_first_step=True, report_to=[], disable_tqdm=False,
    )
    if method == "dpo":
        from trl import DPOConfig as Config
        from trl import DPOTrainer as Trainer
    else:
        from trl import KTOConfig as Config
        from trl import KTOTrainer as Trainer
    model, lora = loaded.model, None
    if parent_adapter is not None:
        model = PeftModel.from_pretrained(model, parent_adapter, is_trainable=True)
    else:
        targets = options.target_modules
        lora = LoraConfig(
            task_type="CAUSAL_LM", r=options.lora_r, lora_alpha=options.lora_alpha, lora_dropout=options.lora_dropout,
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
        )
    return Trainer(
        model=model, args=Config(**common), processing_class=loaded.tokenizer, peft_config=lora,
        train_dataset=Dataset.from_list([trainer_row(r, method) for r in train_rows]),
        eval_dataset=Dataset.from_list([trainer_row(r, method) for r in eval_rows]) if eval_rows else None,
    )


def history(log_history: list[dict]) -> dict:
    """Loss and TRL's reward figures per step (rewards: β × log-ratio to the reference)."""
    keys = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "kl")
    return {
        "train": [{"step": h["step"], **{k: h[k] for k in keys if k in h}} for h in log_history if "loss" in h],
        "eval": [{"step": h["step"], **{k.removeprefix("eval_"): v for k, v in h.items() if k.startswith("eval_")}}
                 for h in log_history if "eval_loss" in h],
    }
