"""FSDP with a 4-bit base: one QLoRA job sharded over a host's GPUs (a GPU bench configuration, UNTESTED here: these
machines have no GPU). The studio's several-device jobs run DDP (docs/scale-out.md, "One job on several devices"),
where each GPU holds the whole 4-bit base; FSDP shards the base too, so a base larger than one GPU's memory trains.

    torchrun --nproc-per-node=2 bench/gpu_fsdp.py --base /models/Llama-3.1-8B --steps 20

FSDP flattens parameters of one dtype per unit: bitsandbytes' 4-bit weights shard only when stored in the compute
dtype (bnb_4bit_quant_storage=bfloat16), the recipe of PEFT's "FSDP + QLoRA" guide. Prints each step's loss, the
peak memory per GPU and the tokens per second, and (rank 0) writes bench/results/gpu_fsdp.json."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
from trl import SFTConfig, SFTTrainer

ROOT = Path(__file__).resolve().parent.parent


class Losses(TrainerCallback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="a local base model folder (safetensors)")
    parser.add_argument("--data", default=str(ROOT / "static" / "examples" / "chat.jsonl"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("FSDP with a 4-bit base needs CUDA GPUs (bitsandbytes' sharded 4-bit storage)")
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)
    # No device_map: FSDP places the shards (with cpu_ram_efficient_loading, rank 0 alone reads the weights).
    model = AutoModelForCausalLM.from_pretrained(args.base, quantization_config=quantization, dtype=torch.bfloat16,
                                                 use_safetensors=True)
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    config = SFTConfig(
        output_dir="/tmp/gpu_fsdp", max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        max_length=args.max_length, learning_rate=2e-4, logging_steps=1, save_strategy="no", bf16=True,
        gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True}, report_to="none",
        fsdp="full_shard auto_wrap", fsdp_config={
            "backward_prefetch": "backward_pre", "forward_prefetch": False, "use_orig_params": False,
            "cpu_ram_efficient_loading": True, "sync_module_states": True, "offload_params": False,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"})
    losses = Losses()
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora, callbacks=[losses])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30
    tokens = trainer.state.num_input_tokens_seen or 0
    print(f"rank {os.environ.get('RANK', '0')}: peak {peak:.2f} GiB, {tokens / seconds:.0f} tokens/s", flush=True)
    if trainer.is_world_process_zero():
        result = {"base": args.base, "gpus": int(os.environ.get("WORLD_SIZE", "1")), "steps": args.steps,
                  "losses": losses.losses, "peak_gib_rank0": peak, "seconds": seconds,
                  "gpu": torch.cuda.get_device_name()}
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        (ROOT / "bench" / "results" / "gpu_fsdp.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
