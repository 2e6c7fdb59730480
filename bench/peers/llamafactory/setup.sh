#!/usr/bin/env bash
# Install LLaMA-Factory into its own virtualenv for bench/time_to_loss.py (--lf bench/peers/llamafactory/run.sh).
#   usage: bench/peers/llamafactory/setup.sh [VENV_DIR]     (default: bench/peers/llamafactory/venv, git-ignored)
# The venv sees the system torch (--system-site-packages) so pip never pulls a multi-GB CUDA build; LLaMA-Factory's
# own pinned transformers/peft/trl/accelerate/datasets go into the venv and shadow the studio's. Workarounds, each
# needed on a CPU-only machine without the hub (recorded in docs/benchmarks.md):
#   - llamafactory installed with --no-deps, then its requirements minus torch, torchvision (a CUDA build on PyPI),
#     gradio (web UI only), modelscope and hf-transfer (hub only);
#   - torchaudio, which LLaMA-Factory imports unconditionally, exists on PyPI only as a CUDA build whose native
#     libraries cannot load beside a CPU torch: installed without deps and its .so files removed, so it imports as
#     pure Python (text SFT never calls it).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-$HERE/venv}"
LF_VERSION=0.9.5
TORCH="$(python -c 'import torch; print(torch.__version__)')"

python -m venv --system-site-packages "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
printf 'torch==%s\nbitsandbytes>=0.50\n' "$TORCH" > "$VENV/constraints.txt"
"${PIP[@]}" --no-deps "llamafactory==$LF_VERSION" torchaudio==2.11.1 torchdata==0.11.0
"${PIP[@]}" -c "$VENV/constraints.txt" "accelerate<=1.11.0,>=1.3.0" "datasets<=4.0.0,>=2.16.0" \
  "peft<=0.18.1,>=0.18.0" "transformers!=4.52.0,!=4.57.0,<=5.6.0,>=4.55.0" "trl<=0.24.0,>=0.18.0" "tyro<0.9.0" \
  einops fire omegaconf sentencepiece tiktoken protobuf pydantic pyyaml scipy pandas matplotlib "av<=16.0.0,>=10.0.0"
find "$VENV" -path "*site-packages/torchaudio/lib/*.so" -delete
"$VENV/bin/python" -c "import llamafactory, transformers; print('llamafactory', llamafactory.__version__, \
'transformers', transformers.__version__)"
