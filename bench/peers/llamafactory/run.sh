#!/usr/bin/env bash
# One LLaMA-Factory QLoRA SFT run on the CPU, with its own defaults (batch 1 x 8 accumulated, warmup 0.1, LoRA on
# all linear layers, alpha 16, dropout 0), NF4 + double quant, 3 epochs at lr 2e-3 cosine, cutoff 512, a checkpoint
# every SAVE_STEPS optimizer steps; no eval split (bench/time_to_loss.py evaluates every arm on the same rows).
#   usage: run.sh MODEL_DIR TRAIN_JSONL OUTPUT_DIR SAVE_STEPS [LEARNING_RATE] [MAX_STEPS] [SEED]
# (LEARNING_RATE default 2e-3; MAX_STEPS default -1: the 3 epochs decide; SEED default 0.)
# TRAIN_JSONL: chat rows {"messages": [{"role", "content"}, ...]}. No `template:` key: LLaMA-Factory parses the
# tokenizer's own chat template (its token ids match apply_chat_template on the demo data; loss on the assistant
# turns only). Env LF_VENV: the venv setup.sh made (default: beside this script). Env LF_BF16=true: its bf16
# (autocast) instead of its default float32 on a CPU.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${LF_VENV:-$HERE/venv}"
MODEL_DIR="$(realpath "$1")"
DATA="$(realpath "$2")"
OUT="$(realpath -m "$3")"
SAVE_STEPS="$4"
LEARNING_RATE="${5:-2.0e-3}"
MAX_STEPS="${6:--1}"
SEED="${7:-0}"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ln -s "$DATA" "$WORK/train.jsonl"
cat > "$WORK/dataset_info.json" <<JSON
{"train": {"file_name": "train.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
           "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                    "system_tag": "system"}}}
JSON
cat > "$OUT/lf_train_config.yaml" <<YAML
model_name_or_path: $MODEL_DIR
trust_remote_code: false
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
quantization_bit: 4
quantization_method: bnb
quantization_type: nf4
double_quantization: true
dataset_dir: $WORK
dataset: train
cutoff_len: 512
overwrite_cache: true
dataloader_num_workers: 0
output_dir: $OUT
logging_steps: 5
save_strategy: steps
save_steps: $SAVE_STEPS
plot_loss: false
overwrite_output_dir: true
report_to: none
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: $LEARNING_RATE
max_steps: $MAX_STEPS
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: ${LF_BF16:-false}
fp16: false
use_cpu: true
seed: $SEED
eval_strategy: "no"
YAML
export CUDA_VISIBLE_DEVICES="" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false HF_HOME="$WORK/hf_home"
exec "$VENV/bin/python" "$HERE/lf_cli.py" train "$OUT/lf_train_config.yaml"
