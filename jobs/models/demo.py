"""The offline default base model: a tiny Llama built locally and deterministically.

No model can be downloaded on these machines, so the studio builds its own base on first use: a byte-level
BPE tokenizer trained on the example dataset, a chat template whose assistant turns carry `{% generation %}`
markers (for assistant-only loss), and a randomly initialised `LlamaForCausalLM` whose every Linear dimension
is a multiple of 64 (bitsandbytes' CPU 4-bit kernels need multiples of 32). The same seed gives byte-identical
`model.safetensors` and `tokenizer.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.spec import DEMO_BASE_MODEL
from jobs.studio import EXAMPLE_DATASET_FILE
from storage.file_modes import open_to_allowed_readers

if TYPE_CHECKING:  # torch and transformers load lazily: importing this module must stay cheap
    from transformers import LlamaConfig, PreTrainedTokenizerFast

DEMO_MODEL_NAME = DEMO_BASE_MODEL

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# Order fixes the ids: pad=0, bos=1, eos=2, then the role markers.
SPECIAL_TOKENS = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *ROLE_TOKENS)

# An upper bound: on the example data BPE runs out of merges well before it (about 650 tokens).
TOKENIZER_VOCAB_SIZE = 1024
VOCAB_MULTIPLE = 64
MAX_POSITIONS = 1024

# Role markers are single special tokens, so no newlines are needed around them. The end token sits inside the
# generation block: assistant-only loss must train the model to stop, not only to answer.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "<|assistant|>{% generation %}{{ message['content'] }}<|end|>{% endgeneration %}"
    "{%- elif message['role'] in ['system', 'user'] -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- else -%}"
    "{{ raise_exception('Unsupported role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

# hidden 128 with 4 heads of 32 and 2 KV heads: q/o are 128x128, k/v 128x64, gate/up 128x256, down 256x128.
# initializer_range 0.1 instead of Llama's 0.02: LoRA never touches lm_head, and with rows of norm
# 0.02*sqrt(128) the frozen head caps every logit near 2.6, so the loss cannot fall far. At 0.1 the same
# 150-step LoRA run (r=8, lr 2e-3) ends at eval loss 4.3 instead of 5.7.
MODEL_SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "initializer_range": 0.1,
}

# torch.manual_seed sets a process-wide generator: two builds in threads would interleave their draws.
_SEEDED_INIT = threading.Lock()


def train_tokenizer(examples_path: Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on the example chats; wrap it with the specials and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # Digits one by one (as Llama does), so every number is spelled with the same ten tokens.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte stays encodable
        show_progress=False,
    )
    tokenizer.train_from_iterator(_example_texts(examples_path), trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    # Plain-text encodes get a BOS like Llama's; apply_chat_template encodes with add_special_tokens=False and
    # the template writes its own, so chat rows get exactly one.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="right",
        model_max_length=MAX_POSITIONS,
        chat_template=CHAT_TEMPLATE,
    )


def _example_texts(examples_path: Path) -> Iterator[str]:
    with open(examples_path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                for message in json.loads(line)["messages"]:
                    yield message["content"]


def model_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The demo model's `LlamaConfig`, with its vocabulary and special ids taken from `tokenizer`."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=_round_up(len(tokenizer), VOCAB_MULTIPLE),
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **MODEL_SHAPE,
    )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _write_model(out_dir: Path, seed: int, examples_path: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(examples_path)
    config = model_config(tokenizer)
    # fork_rng: seeding must not reset the random state of the process that asked for the model.
    with _SEEDED_INIT, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def build_demo_model(out_dir: Path, seed: int = 0, examples_path: Path | None = None) -> Path:
    """Build the demo model into `out_dir`, which must not exist yet (or be empty), and return `out_dir`.

    The files are written to a temporary sibling directory that is renamed into place, so `out_dir` is
    either absent or complete. Raises `FileExistsError` when `out_dir` already has content (the new copy is
    discarded).
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _write_model(tmp_dir, seed, Path(examples_path or EXAMPLE_DATASET_FILE))
        open_to_allowed_readers(tmp_dir)  # safetensors writes 0600; a shared data dir's group reads bases too
        try:
            # rename() refuses a non-empty target, so of several concurrent builders exactly one wins.
            os.rename(tmp_dir, out_dir)
        except OSError as error:
            if out_dir.is_dir() and any(out_dir.iterdir()):
                raise FileExistsError(f"{out_dir} already exists") from error
            raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def ensure_demo_model(models_dir: Path) -> Path:
    """Return `models_dir / DEMO_MODEL_NAME`, building it on first use. Safe when processes race to build."""
    out_dir = Path(models_dir) / DEMO_MODEL_NAME
    if _is_complete(out_dir):
        return out_dir
    try:
        build_demo_model(out_dir)
    except FileExistsError:
        # Another builder renamed its copy into place first; ours is already discarded.
        if not _is_complete(out_dir):
            raise
    return out_dir


def demo_model_ready(models_dir: Path) -> bool:
    return _is_complete(Path(models_dir) / DEMO_MODEL_NAME)


def _is_complete(model_dir: Path) -> bool:
    # A build only appears by renaming a finished directory, but a hand-made or copied one may be partial.
    required = ("config.json", "model.safetensors", "tokenizer.json")
    return all((model_dir / name).is_file() for name in required)
