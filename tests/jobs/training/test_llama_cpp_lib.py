"""Where llama.cpp's quantizer is missing or of another version, q4_k_m is refused in words before anything is
written (the quantizer itself is tested in test_gguf.py, on the npm package .ci/run installs)."""

import json

import pytest

from jobs.training import gguf, llama_cpp_lib
from jobs.training.gguf import ExportError, write_gguf


@pytest.fixture
def npm_package(tmp_path, monkeypatch):
    """The npm package's folder moved to an empty one; llama-cpp-python and a llama-quantize program hidden."""
    monkeypatch.setattr(llama_cpp_lib, "PACKAGE_DIR", tmp_path / "linux-x64")
    monkeypatch.setattr(gguf, "_llama_cpp_quantize", lambda: None)
    monkeypatch.setattr(gguf.shutil, "which", lambda name: None)
    llama_cpp_lib._load.cache_clear()
    yield tmp_path / "linux-x64"
    llama_cpp_lib._load.cache_clear()


def test_a_missing_or_other_version_quantizer_refuses_q4_k_m_in_words(npm_package, demo_model_dir, tmp_path):
    assert llama_cpp_lib.library_problem() == (
        "@node-llama-cpp/linux-x64 is not installed (npm ci --omit=optional --ignore-scripts --prefix "
        "native/llama-cpp)")
    assert gguf.unavailable("q4_k_m").startswith("quantization: q4_k_m needs llama.cpp's quantizer and this machine "
                                                 "has none (the llama-cpp-python package, a llama-quantize program, "
                                                 "or npm's @node-llama-cpp/linux-x64: @node-llama-cpp/linux-x64 is "
                                                 "not installed")
    assert gguf.unavailable("q8_0") is None
    npm_package.mkdir()
    (npm_package / "package.json").write_text(json.dumps({"version": "3.22.1"}))
    llama_cpp_lib._load.cache_clear()
    assert llama_cpp_lib.library_problem() == (
        "@node-llama-cpp/linux-x64 is 3.22.1, but the studio binds llama.cpp's quantizer of 3.21.1 (npm ci "
        "--omit=optional --ignore-scripts --prefix native/llama-cpp)")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ExportError, match="quantization: q4_k_m needs llama.cpp's quantizer .* is 3.22.1"):
        write_gguf(demo_model_dir, tmp_path / "model.gguf", "q4_k_m", "x")
    assert sorted(tmp_path.rglob("*")) == before
