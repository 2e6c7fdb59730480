"""A merged model (a plain transformers folder) as one GGUF file for llama.cpp, Ollama and LM Studio.

Written with the `gguf` package's maintained parts, not by hand: `GGUFWriter` lays out the file, `TensorNameMap` names
each tensor as llama.cpp expects, `SpecialVocab` carries merges, special ids and the chat template, `gguf.quants`
makes Q8_0. What is left here is what llama.cpp's own `convert_hf_to_gguf.py` does for the Llama architecture: the
hyperparameters, the byte-level BPE vocabulary, and the rotary permutation of q/k rows (llama.cpp's rope pairs
neighbouring rows; transformers pairs the two halves of each head).

Why not llama.cpp's converter itself: PyPI ships it only inside llama-cpp-python's 76 MB sdist, split over a
`conversion/` package (22k lines) that needs the gguf-py of the same tree, which differs from the PyPI `gguf` of
the same version number (it has `LazyChunkedTensor`, PyPI 0.19.0 does not): vendoring it means vendoring a second
gguf package. Q4_K_M has no Python quantizer: it comes from llama.cpp's own (`llama_model_quantize` through
llama-cpp-python, or through ctypes on the libllama of npm's @node-llama-cpp/linux-x64 (jobs.training.llama_cpp_lib,
what .ci/run installs), or a `llama-quantize` program) where one is installed, and is refused otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from jobs.training import llama_cpp_lib

QUANTIZATIONS = ("f16", "q8_0", "q4_k_m")
ARCHITECTURES = {"LlamaForCausalLM": "LLAMA"}
"""transformers' class -> gguf.MODEL_ARCH member. Only what a test converts and reads back is listed."""

# The pre-tokenizer decides how text is cut before BPE; llama.cpp names the ones it implements. Known by structure
# (tokenizer.json's `pre_tokenizer`), not by llama.cpp's hash of a test string, which changes with every vocabulary.
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
PRE_TOKENIZERS = {
    "gpt-2": _BYTE_LEVEL,  # GPT-2's regex, numbers kept whole (SmolLM2 as transformers rebuilds it from its GGUF)
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
}

Progress = Callable[[str, int, int], None]
"""(what, done, total) -> None."""


class ExportError(ValueError):
    """A model, tokenizer or quantization the export cannot convert faithfully, in words."""


def conversion_problems(model_dir: Path) -> list[str]:
    """Everything about the folder that the converter cannot carry into a GGUF faithfully (empty: it can)."""
    config = _read_json(model_dir / "config.json")
    architectures = config.get("architectures") or [config.get("model_type", "unknown")]
    if architectures[0] not in ARCHITECTURES:
        return [f"architecture: {architectures[0]} is not one the GGUF export converts "
                f"(it converts {', '.join(ARCHITECTURES)})"]
    problems = []
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        problems.append(f"rope: scaling '{rope.get('rope_type', rope.get('type'))}' is not converted")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            problems.append(f"{flag}: biases are not converted")
    try:
        _pre_tokenizer(_read_json(model_dir / "tokenizer.json"))
    except (OSError, ExportError) as error:
        problems.append(str(error))
    return problems


def quantizer_problem() -> str | None:
    """Why Q4_K_M cannot be made here, or None when llama.cpp's quantizer is installed."""
    if _llama_cpp_quantize() is not None or shutil.which("llama-quantize"):
        return None
    if (npm_problem := llama_cpp_lib.library_problem()) is None:
        return None
    return ("q4_k_m needs llama.cpp's quantizer and this machine has none (the llama-cpp-python package, a "
            f"llama-quantize program, or npm's @node-llama-cpp/linux-x64: {npm_problem}); f16 and q8_0 need none")


def unavailable(quantization: str) -> str | None:
    """Why this machine cannot make `quantization` (asked before an export is queued), or None."""
    return f"quantization: {quantizer_problem()}" if quantization == "q4_k_m" and quantizer_problem() else None


def write_gguf(model_dir: Path, out_file: Path, quantization: str, name: str,
               progress: Progress | None = None) -> Path:
    """Convert `model_dir` to `out_file` at `quantization`, atomically: nothing is left at `out_file` (or beside
    it) unless the whole file was written. Raises ExportError naming every problem first."""
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization: '{quantization}' is not one of {', '.join(QUANTIZATIONS)}")
    if problems := conversion_problems(model_dir):
        raise ExportError("; ".join(problems))
    if quantization == "q4_k_m" and (problem := quantizer_problem()):
        raise ExportError(f"quantization: {problem}")
    partial = out_file.with_name(f"{out_file.name}.partial")
    f16_file = out_file.with_name(f"{out_file.name}.f16.partial")
    try:
        if quantization == "q4_k_m":
            _convert(model_dir, f16_file, "f16", name, progress)
            _quantize_q4_k_m(f16_file, partial)
        else:
            _convert(model_dir, partial, quantization, name, progress)
        os.replace(partial, out_file)
    finally:
        partial.unlink(missing_ok=True)
        f16_file.unlink(missing_ok=True)
    return out_file


def _convert(model_dir: Path, out_file: Path, quantization: str, name: str, progress: Progress | None) -> None:
    import gguf
    from safetensors import safe_open

    config = _read_json(model_dir / "config.json")
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[config["architectures"][0]])
    writer = gguf.GGUFWriter(out_file, gguf.MODEL_ARCH_NAMES[arch])
    try:
        _hyperparameters(writer, config, quantization, name)
        _vocabulary(writer, model_dir, config)
        names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise ExportError(f"model: no safetensors weights in {model_dir.name}")
        keys = []
        for file in files:
            with safe_open(file, "pt") as weights:
                keys += [(file, key) for key in weights.keys()]  # noqa: SIM118 (a safetensors handle, not a dict)
        for done, (file, key) in enumerate(keys, start=1):
            with safe_open(file, "pt") as weights:
                tensor = weights.get_tensor(key)
            if key == "lm_head.weight" and config.get("tie_word_embeddings"):
                continue  # llama.cpp reuses token_embd when output.weight is absent
            if (gguf_name := names.get_name(key, try_suffixes=(".weight", ".bias"))) is None:
                raise ExportError(f"model: tensor '{key}' has no GGUF name for this architecture")
            rows = _rotary_rows(gguf_name, tensor, config).float().numpy()
            data, raw_dtype = _encode(rows, gguf_name, quantization)
            writer.add_tensor(gguf_name, data, raw_dtype=raw_dtype)
            if progress is not None:
                progress("tensors", done, len(keys))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _hyperparameters(writer, config: dict, quantization: str, name: str) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quantization]
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _vocabulary(writer, model_dir: Path, config: dict) -> None:
    """The byte-level BPE vocabulary as llama.cpp's `gpt2` tokenizer model (convert_hf_to_gguf's get_vocab_base):
    ids past the tokenizer's are [PAD<id>] (the embedding is padded), special added tokens are control tokens."""
    import gguf

    tokenizer = _read_json(model_dir / "tokenizer.json")
    pre = _pre_tokenizer(tokenizer)
    by_id = {index: text for text, index in tokenizer["model"]["vocab"].items()}
    added = {token["id"]: token for token in tokenizer.get("added_tokens", [])}
    by_id.update({index: token["content"] for index, token in added.items()})
    tokens, types = [], []
    for index in range(config["vocab_size"]):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.CONTROL if added[index]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)


def _pre_tokenizer(tokenizer: dict) -> str:
    model = tokenizer.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ExportError(f"tokenizer: a {model.get('type', 'unknown')} tokenizer"
                          f"{' with byte fallback' if model.get('byte_fallback') else ''} is not converted "
                          "(the export converts byte-level BPE tokenizers)")
    found = _without_offsets(tokenizer.get("pre_tokenizer"))
    for name, shape in PRE_TOKENIZERS.items():
        if found == shape:
            return name
    raise ExportError(f"tokenizer: its pre-tokenizer {json.dumps(found)[:200]} is not one llama.cpp is known to "
                      f"implement here ({', '.join(PRE_TOKENIZERS)})")


def _without_offsets(node):
    """`trim_offsets` only changes reported character offsets, never the tokens."""
    if isinstance(node, dict):
        return {key: _without_offsets(value) for key, value in node.items() if key != "trim_offsets"}
    if isinstance(node, list):
        return [_without_offsets(value) for value in node]
    return node


def llama_permute(rows, heads: int):
    """llama.cpp's LlamaModel.permute: within each head, interleave the two rotary halves (row i of the first half
    beside row i of the second). Works on any tensor whose first axis is heads × head_dim (a LoRA B too)."""
    shape = rows.shape
    return rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _rotary_rows(gguf_name: str, tensor, config: dict):
    """q and k (a base weight, or a LoRA's B) in llama.cpp's rotary row order; any other tensor as it is."""
    if ".attn_q." in gguf_name:
        return llama_permute(tensor, config["num_attention_heads"])
    if ".attn_k." in gguf_name:
        return llama_permute(tensor, config.get("num_key_value_heads") or config["num_attention_heads"])
    return tensor


def _encode(data, gguf_name: str, quantization: str):
    """(array, raw dtype) as llama.cpp's converter stores it: norms and other vectors stay F32; Q8_0 falls back to
    F16 for a row length that is not a multiple of its 32-wide blocks."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    if data.ndim <= 1 or gguf_name.endswith("_norm.weight"):
        return data.astype(np.float32), None
    if quantization == "q8_0" and data.shape[-1] % 32 == 0:  # Q8_0's block: 32 weights, one f16 scale
        return quants.quantize(data.astype(np.float32), GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
    return data.astype(np.float16), None


def _llama_cpp_quantize():
    try:
        import llama_cpp
    except (ImportError, OSError):  # OSError: the package is there but its shared library cannot load
        return None
    return getattr(llama_cpp, "llama_model_quantize", None)


def _quantize_q4_k_m(source: Path, target: Path) -> None:
    """llama.cpp's own quantizer: in-process through llama-cpp-python or the npm package's libllama, else its
    `llama-quantize` program."""
    quantize = _llama_cpp_quantize()
    if quantize is not None:
        import ctypes

        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
        if quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
            raise ExportError("quantization: llama.cpp's quantizer failed on the f16 file")
        return
    if llama_cpp_lib.library_problem() is None:
        try:
            llama_cpp_lib.quantize(source, target, llama_cpp_lib.LLAMA_FTYPE_MOSTLY_Q4_K_M)
        except RuntimeError as error:
            raise ExportError(f"quantization: {error}") from error
        return
    done = subprocess.run(["llama-quantize", str(source), str(target), "Q4_K_M"], capture_output=True, text=True)
    if done.returncode != 0:
        raise ExportError(f"quantization: llama-quantize failed: {done.stderr.strip()[-500:]}")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def lora_problems(adapter_config: dict) -> list[str]:
    """Why llama.cpp cannot take this adapter as a GGUF LoRA (empty: it can); the merged GGUF is unaffected."""
    problems = []
    if adapter_config.get("peft_type", "LORA") != "LORA":
        problems.append(f"a {adapter_config['peft_type']} adapter is not a LoRA")
    if adapter_config.get("use_dora"):
        problems.append("DoRA's magnitude vectors have no place in a GGUF LoRA")
    if adapter_config.get("modules_to_save"):
        problems.append(f"fully trained modules ({', '.join(adapter_config['modules_to_save'])}) are not LoRA weights")
    if adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
        problems.append("per-module ranks or alphas: a GGUF LoRA has one alpha")
    return problems


def write_lora_gguf(adapter_dir: Path, base_config: dict, out_file: Path, name: str) -> Path:
    """The adapter alone in llama.cpp's GGUF LoRA format (as its convert_lora_to_gguf.py writes it: general.type
    adapter, adapter.type lora, adapter.lora.alpha, `<base tensor>.lora_a` / `.lora_b` in f16, q/k B rows permuted
    like the base's rows), atomically. llama.cpp scales by alpha / rank, so an rsLoRA adapter (alpha / sqrt(rank))
    is written with alpha × sqrt(rank): the same scale. Raises ExportError when llama.cpp cannot take it."""
    import gguf
    import numpy as np
    from safetensors import safe_open

    adapter_config = _read_json(adapter_dir / "adapter_config.json")
    if problems := lora_problems(adapter_config):
        raise ExportError("lora: " + "; ".join(problems))
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[base_config["architectures"][0]])
    names = gguf.get_tensor_name_map(arch, base_config["num_hidden_layers"])
    rank, alpha = adapter_config["r"], float(adapter_config["lora_alpha"])
    if adapter_config.get("use_rslora"):
        alpha *= rank ** 0.5
    pairs: dict[str, dict[str, object]] = {}
    with safe_open(adapter_dir / "adapter_model.safetensors", "pt") as weights:
        for key in weights.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            part = "a" if ".lora_A." in key else "b" if ".lora_B." in key else None
            base_key = key.replace("base_model.model.", "", 1).replace(f".lora_{part.upper()}", "") if part else key
            gguf_name = names.get_name(base_key, try_suffixes=(".weight",)) if part else None
            if gguf_name is None or gguf_name.startswith("token_embd"):
                raise ExportError(f"lora: tensor '{key}' is not a LoRA of a layer llama.cpp takes one for")
            pairs.setdefault(gguf_name, {})[part] = weights.get_tensor(key)
    partial = out_file.with_name(f"{out_file.name}.partial")
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[arch])
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(name)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        for gguf_name, pair in sorted(pairs.items()):
            lora_b = _rotary_rows(gguf_name, pair["b"], base_config)
            writer.add_tensor(f"{gguf_name}.lora_a", pair["a"].float().numpy().astype(np.float16))
            writer.add_tensor(f"{gguf_name}.lora_b", lora_b.float().numpy().astype(np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out_file)
    finally:
        writer.close()
        partial.unlink(missing_ok=True)
    return out_file
