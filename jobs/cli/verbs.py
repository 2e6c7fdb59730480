"""The verbs that mirror one endpoint each, declared as data: name, endpoint, arguments (named as the endpoint's
parameters), and the operator's implementation where one runs without the web app (jobs/cli/operator.py). A verb
without one needs a running studio (`--url`): chat needs its loaded models, the memory verdict, preview, script and
runs compared are computed by the app, and account verbs act on a signed-in person."""

from __future__ import annotations

from jobs.cli import operator as op
from jobs.cli.verb import Arg, Verb
from jobs.combine_rules import SIGN_METHODS, TYPES

BASE = Arg("base_model", "the base model", default="demo-tiny-llama")
SPEC = Arg("spec", "a spec file (JSON or YAML)", read="spec")
JOB_ID = Arg("job_id", "the job's id", type=int)
NAME = Arg("name", "its name")
ADAPTER = Arg("name", "the adapter's name")
SUITE = Arg("name", "the prompt suite's name")
PRESET = Arg("name", "the preset's name (a shared one: owner/name)")
QUANTIZATION = Arg("quantization", "the GGUF's weights (q4_k_m needs llama.cpp's quantizer)", default="q8_0",
                   choices=("f16", "q8_0", "q4_k_m"))
GENERATION = (Arg("max_new_tokens", "tokens to generate at most", type=int, default=64),
              Arg("temperature", "0: greedy", type=float, default=0.0),
              Arg("top_p", "nucleus sampling's share", type=float, default=1.0),
              Arg("seed", "the sampling seed (the same for every pane)", type=int, default=0))

VERBS = (
    # jobs and the queue
    Verb("job", "get_job", "one job: status, progress, metrics, error, adapter, spec", (JOB_ID,), op.job),
    Verb("move", "move_job", "move a queued job (admins, once the studio has accounts)",
         (JOB_ID, Arg("where", "where to", choices=("front", "up", "down", "back"))), op.move),
    Verb("priority", "set_priority", "change a queued job's priority (higher runs first)",
         (JOB_ID, Arg("priority", "the new priority", type=int)), op.set_priority),
    Verb("workers", "list_workers", "live workers: host, device, memory, pool, current job", (), op.workers),
    Verb("sweep", "submit_sweep", "queue one job per point of a grid (or a list) over spec fields",
         (SPEC, Arg("sweep", "a YAML or JSON file: spec fields to lists of values", read="file"),
          Arg("mode", "grid: every combination; list: zipped", default="grid", choices=("grid", "list")),
          Arg("name", "the sweep's name (default: the time)", default=""),
          Arg("priority", "higher runs first", type=int, default=0)), op.submit_sweep),
    Verb("cancel-sweep", "cancel_sweep", "cancel every queued or running job of a sweep", (NAME,), op.cancel_sweep),
    Verb("search", "start_search", "search spec values within a budget (Optuna; losers pruned early)",
         (SPEC, Arg("space", "a YAML or JSON file: spec fields to {low, high, log} or {choices}", read="file"),
          Arg("budget_trials", "trials at most (the sweep cap)", type=int),
          Arg("budget_minutes", "no trial starts after this many minutes (0: no time limit)", type=float,
              default=0.0),
          Arg("parallel", "trials at once", type=int, default=1),
          Arg("pruner", "how losers are stopped", default="hyperband", choices=("hyperband", "successive_halving")),
          Arg("name", "the search's name", default=""),
          Arg("start_from_plan", "the first trial takes the plan's values, clamped into the space", type=bool,
              default=True)), op.start_search),
    Verb("searches", "list_searches", "your searches: name, state, budget", (), op.list_searches),
    Verb("search-result", "search_result", "a search's trials, curves, best spec and parameter importance",
         (NAME,), op.search_result),
    Verb("search-train-best", "train_search_best", "queue the best trial's spec as a job of its own", (NAME,),
         op.train_search_best),
    Verb("cancel-search", "cancel_search", "stop a search and cancel its queued and running trials", (NAME,),
         op.cancel_search),
    Verb("metrics", "job_metrics", "a run's metric series as [step, value] points",
         (JOB_ID, Arg("names", "a metric to show (repeat; default: all)", default=[], many=True)), op.metrics),
    Verb("samples", "sample_answers", "a run's sample answers, per prompt and step", (JOB_ID,)),
    Verb("compare-runs", "compare_runs", "runs side by side: specs and final metrics ranked by eval loss",
         (Arg("job_ids", "job ids", type=int, default=(), many=True),
          Arg("sweep", "add every run of this sweep", default=""),
          Arg("differences_only", "only the spec fields that differ", type=bool, default=True))),
    # before submitting
    Verb("plan", "plan_job", "the step plan of a spec: steps, tokens, chosen values", (SPEC,), op.plan),
    Verb("estimate", "estimate_memory", "the memory verdict of a spec on each device it may run on", (SPEC,)),
    Verb("preview", "preview_dataset", "the spec's data as the model sees it (split, cuts, first rows)", (SPEC,)),
    Verb("script", "job_script", "a spec as the CLI spec and as a plain TRL script", (SPEC,)),
    Verb("base-info", "base_model_info", "a base model: prepared or not, its LoRA targets and modules", (BASE,)),
    # adapters
    Verb("adapters", "list_adapters", "adapters, newest first", (Arg("base_model", "only this base's", default=""),),
         op.adapters),
    Verb("download-adapter", "download_adapter", "the adapter's zip (PEFT files, tokenizer, card)", (ADAPTER,),
         op.adapter_zip, download=True),
    Verb("rename-adapter", "rename_adapter", "rename an adapter", (ADAPTER, Arg("new_name", "its new name")),
         op.rename_adapter),
    Verb("delete-adapter", "delete_adapter", "delete an adapter: its files and its entry", (ADAPTER,),
         op.delete_adapter),
    Verb("merge", "merge_adapter", "queue a job merging the adapter into a 16-bit copy of its base",
         (ADAPTER, Arg("dtype", "the merged weights' dtype", default="bfloat16",
                       choices=("bfloat16", "float16", "float32"))), op.merge),
    Verb("combine", "combine_adapters", "queue a job making a new adapter from several of one base (PEFT's "
         "weighted combination)",
         (Arg("name", "the new adapter's name"), Arg("adapters", "the adapters to combine (two or more)", many=True),
          Arg("weights", "a weight per adapter, in order (repeat; default: 1 each)", type=float, default=[],
              many=True),
          Arg("combination_type", "PEFT's combination", default="linear", choices=TYPES),
          Arg("density", "share kept by ties, dare and magnitude_prune", type=float, default=0.5),
          Arg("majority_sign_method", "how ties elects signs", default="total", choices=SIGN_METHODS),
          Arg("svd_rank", "the svd types' rank (0: the largest parent's)", type=int, default=0),
          Arg("priority", "higher runs first", type=int, default=0)), op.combine),
    Verb("download-merged", "download_merged", "the merged model's zip, once merged", (ADAPTER,), op.merged_zip,
         download=True),
    Verb("export-gguf", "export_gguf", "queue a job exporting the adapter as GGUF with an Ollama Modelfile",
         (ADAPTER, QUANTIZATION), op.export_gguf),
    Verb("download-gguf", "download_gguf", "the GGUF export's zip, once exported", (ADAPTER, QUANTIZATION),
         op.gguf_zip, download=True),
    Verb("push", "push_to_hub", "push the adapter or its merged model to a hub repo of yours (your hub token)",
         (ADAPTER, Arg("repo_id", "owner/name"), Arg("what", "what to push", default="adapter",
                                                     choices=("adapter", "merged")),
          Arg("private", "a private repo", type=bool, default=True))),
    Verb("set-hub-token", "set_hub_token", "keep your hub token (encrypted; never shown back)",
         (Arg("token", "your hub token", read="secret", env="STUDIO_HUB_TOKEN"),)),
    Verb("clear-hub-token", "clear_hub_token", "forget your hub token"),
    Verb("hub-token", "hub_token_status", "whether you keep a hub token, and whose your hub calls use"),
    Verb("set-wandb-key", "set_wandb_key", "keep your W&B API key for report_to wandb (encrypted; never shown back)",
         (Arg("key", "your W&B API key", read="secret", env="STUDIO_WANDB_KEY"),)),
    Verb("clear-wandb-key", "clear_wandb_key", "forget your W&B API key"),
    Verb("wandb-key", "wandb_key_status", "whether you keep a W&B API key"),
    # chat, votes, suites
    Verb("compare", "compare", "one prompt to several adapters (and 'base') in one batched generate",
         (Arg("prompt", "the prompt"), Arg("adapters", "adapter names, 'base' for the base", many=True), BASE,
          *GENERATION, Arg("system", "a system prompt", default=""), Arg("top_k", "0: off", type=int, default=0),
          Arg("repetition_penalty", "1: none", type=float, default=1.0))),
    Verb("vote", "record_vote", "store a vote judged elsewhere on answers shown in this order",
         (BASE, Arg("prompt", "the prompt", default=""),
          Arg("answers", 'a JSON file or text: [{"adapter", "reply"}] in the order shown', default="[]", read="json"),
          Arg("outcome", "the verdict", default="best", choices=("best", "tie", "all_bad")),
          Arg("best", "the winner's index (outcome best)", type=int, default=-1)), op.vote),
    Verb("leaderboard", "leaderboard", "blind-vote standings of a base's adapters", (BASE,), op.leaderboard),
    Verb("export-votes", "export_votes", "store your blind votes as the data a preference method trains on "
         "(pairs for dpo, orpo, simpo, reward; labelled answers for kto); optionally train it",
         (BASE, Arg("name", "the dataset's name", default="votes"),
          Arg("train_dpo", "queue a job of --method on it", type=bool, default=False),
          Arg("start_from", "the adapter the job starts from (default: a new one)", default=""),
          Arg("steps", "training steps", type=int, default=50),
          Arg("method", "dpo, orpo, simpo, reward (pairs) or kto (labelled answers)", default="dpo",
              choices=("dpo", "orpo", "simpo", "reward", "kto")))),
    Verb("suites", "list_suites", "your prompt suites", (), op.suites),
    Verb("save-suite", "save_suite", "create or replace a prompt suite from a file (one prompt a line, "
         "'prompt => reference' where there is one)", (SUITE, Arg("prompts", "the suite's file", read="file")),
         op.save_suite),
    Verb("run-suite", "run_suite", "answer every prompt of a suite with each pane and score the references",
         (SUITE, Arg("adapters", "adapters, adapter@step-N checkpoints, 'base'", many=True), BASE, *GENERATION)),
    Verb("suite-results", "suite_results", "a suite's answers per prompt and pane, and mean log-likelihoods",
         (SUITE, BASE), op.suite_results),
    Verb("suite-diff", "suite_diff", "each prompt's answer from one pane against another's (HTML)",
         (SUITE, Arg("before", "a pane"), Arg("after", "another pane"), BASE), op.suite_diff),
    # evaluation
    Verb("evaluate", "submit_eval", "queue an evaluation: adapters of one base and the base over an eval set (a job's "
         "held-out rows, a dataset or a prompt suite); the spec file's fields are in docs/api.md",
         (Arg("spec", "an eval spec file (JSON or YAML)", read="spec"),
          Arg("priority", "higher runs first", type=int, default=0)), op.evaluate),
    Verb("eval-results", "eval_results", "an evaluation's table of adapters x metrics, the best per metric, and the "
         "rows where the adapters disagree most", (JOB_ID, Arg("rows", "rows of the per-row view", type=int,
                                                                default=50)), op.eval_results),
    Verb("export-eval", "export_eval", "an evaluation's table, per-row view or every answer as CSV or JSON",
         (JOB_ID, Arg("what", "what to export", default="table", choices=("table", "rows", "predictions")),
          Arg("format", "the format", default="csv", choices=("csv", "json"))), op.export_eval),
    # presets
    Verb("presets", "list_presets", "your presets, and the shared ones as owner/name", (), op.presets),
    Verb("save-preset", "save_preset", "save (or replace) a preset from a spec file", (PRESET, SPEC), op.save_preset),
    Verb("load-preset", "load_preset", "a preset's spec fields", (PRESET,), op.load_preset),
    Verb("delete-preset", "delete_preset", "delete a preset", (PRESET,), op.delete_preset),
    Verb("share-preset", "share_preset", "share a preset with everyone (--no-shared: private again; admins)",
         (PRESET, Arg("shared", "shared with everyone", type=bool, default=True)), op.share_preset),
    # the signed-in person
    Verb("account", "my_account", "who you are, your disk and limits, your sessions, your hub token"),
    Verb("change-password", "change_password", "set a new password (your other sessions end)",
         (Arg("current", "your current password", read="secret", env="STUDIO_PASSWORD"),
          Arg("new", "the new password", read="secret", env="STUDIO_NEW_PASSWORD"))),
    Verb("create-api-key", "create_api_key", "a new API key for the OpenAI-compatible /v1 endpoint (shown once; "
         "replaces your old one)"),
    Verb("revoke-api-key", "revoke_api_key", "revoke your API key"),
    Verb("audit", "audit_log", "the newest audit events (admins)", (Arg("limit", "how many", type=int, default=200),)),
)
