"""Every other bench script's --smoke mode runs and writes its report (CI runs them, so no benchmark rots)."""

import pytest

from tests.bench.smoke import run_smoke
from tests.servers import require_servers


@pytest.mark.slow
@pytest.mark.parametrize(("script", "holds"), [
    ("train_throughput.py", ("plain_trl", "plain_trl_packed", "studio", "ratio_studio_over_plain")),
    ("compare_batched.py", ("rows",)),
    ("compare_outside.py", ("rows", "load_average_1min")),  # /compare through gradio_client, batched and one by one
    ("chat_fairness.py", ("b_first_token_s", "a_alone_s", "a_with_b_s", "runs")),  # two people, one scheduler
    ("lm_head.py", ("results",)),
    ("login_storm.py", ("arms", "storm_p95_ratio_before_over_now")),  # the front door against Gradio's own login
    ("openai_serve.py", ("alone", "concurrent", "throughput_ratio", "answers_equal")),  # /v1, the openai client
    ("eval_split.py", ("summary", "runs")),  # every size trained with and without the split, one evaluator
    ("compute_dtype.py", ("summary", "runs", "cpu_bf16")),  # float32 and bfloat16 compute, one evaluator
    ("job_overhead.py", ("result",)),  # a real worker and the jobs CLI
    ("gpu_qlora.py", ("rows", "matmul_params")),  # on a CPU: a tiny Llama, plain TRL and a studio job
    ("memory_estimate.py", ("rows", "worst_ratio_error")),  # the memory verdict against a real peak
    ("memory_breakdown.py", ("arms", "idle")),  # peak memory by phase: one demo step in one process
    ("speed_options.py", ("arms",)),  # sdpa, eager, and Liger skipped in words on a CPU
    ("pack_passes.py", ("arms", "rounds")),  # one packed sequence in one forward pass and in two, alternated
    ("onednn_cache.py", ("arms", "load_average_1min")),  # bf16 matmuls over token counts, per oneDNN cache size
    ("saved_tensors.py", ("saved_mb", "by_shape", "token_counts")),  # what a step keeps for backward, by shape
    ("preference_methods.py", ("runs", "vote_outcomes", "chat_answers")),  # ORPO and KTO, built data and chat votes
    ("grpo_json.py", ("base", "sft", "grpo", "grpo_groups")),  # SFT then GRPO with the json reward, greedy parse rates
    ("scale_out.py", ("claims", "wake_up_s", "connections_per_worker")),  # needs redis-server and PostgreSQL
])
def test_the_smoke_run_writes_its_report(tmp_path, script, holds):
    if script == "scale_out.py":
        require_servers()
    _, report = run_smoke(script, tmp_path / "report.json")
    assert set(holds) <= set(report) and report["versions"], report
