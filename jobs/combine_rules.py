"""What PEFT's weighted combination (`PeftModel.add_weighted_adapter`, peft 0.21.2) accepts, said at submit.

Read from peft's `LoraModel._check_add_weighted_adapter` and `add_weighted_adapter`:
- linear, ties, dare_linear, dare_ties and magnitude_prune combine the A and B matrices one by one, so every parent
  must have the same rank (PEFT raises otherwise); the new adapter keeps it.
- cat stacks the matrices: the new rank is the sum of the parents' ranks (any ranks).
- the svd types combine the full delta weights and factor them back to `svd_rank` (default: the largest parent rank).
- density (the share of each task vector TIES/DARE/magnitude pruning keep) must be in (0, 1]; PEFT passes None on to
  the pruning, which fails, so the types that prune need one. majority_sign_method ('total' or 'frequency') is how
  TIES elects each weight's sign.
- PEFT refuses adapters that target parameters (`target_parameters`), two adapters that train the same module fully
  (modules_to_save), and a mix of regex-string and list target_modules. It does not refuse DoRA, but combines only
  A and B: the new adapter's magnitude vectors are re-initialised from the base, so a DoRA parent's magnitudes are
  silently lost. We refuse it, and any fully trained module (PEFT copies the first parent's `modules_to_save`
  wrapper without weighing it).
- parents that target different modules combine: the new adapter targets the union, and a parent counts as zero on
  a module it does not adapt.
No torch here: the Adapters tab, the API and the CLI check a submission with the parents' adapter_config.json alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jobs.spec import Problem, name_problem

EQUAL_RANK_TYPES = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
SVD_TYPES = ("svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd")
TYPES = (*EQUAL_RANK_TYPES, "cat", *SVD_TYPES)
DENSITY_TYPES = ("ties", "dare_linear", "dare_ties", "magnitude_prune", "ties_svd", "dare_linear_svd",
                 "dare_ties_svd", "magnitude_prune_svd")
SIGN_TYPES = ("ties", "dare_ties", "ties_svd", "dare_ties_svd")
SIGN_METHODS = ("total", "frequency")
MIN_PARENTS, MAX_PARENTS = 2, 8
"""At most 8: each parent is one more adapter held in memory while combining (the work stays bounded)."""
MAX_WEIGHT = 2.0
"""|weight| at most 2: negative weights subtract an adapter (task arithmetic); beyond 2 is extrapolation."""
MAX_RANK = 1024  # the spec's own bound on lora_r


@dataclass(frozen=True)
class Parent:
    """A parent adapter as submit found it: its name, base and adapter_config.json."""

    name: str
    base_model: str
    config: dict


def rank_of(config: dict) -> int:
    """The rank PEFT allocates for the adapter: its r, or the largest of a rank_pattern."""
    return max([int(config.get("r", 0)), *map(int, (config.get("rank_pattern") or {}).values())])


def combination_problems(name: str, parents: list[Parent], weights: list[float], combination_type: str,
                         density: float, majority_sign_method: str, svd_rank: int,
                         requested: int | None = None) -> list[Problem]:
    """Every reason PEFT would refuse (or silently mangle) this combination, each naming its field. `requested`: how
    many adapters were asked for, when some could not be found (the caller reports those, under `adapters`)."""
    count = len(parents) if requested is None else requested
    problems = []
    if problem := name_problem(name):
        problems.append(Problem(field="name", message=problem))
    problems += _count_problems(count) + _parent_problems(parents)
    problems += _weight_problems(weights, count)
    if combination_type not in TYPES:
        problems.append(Problem(field="combination_type", message=f"'{combination_type}' is not one of PEFT's "
                                                                  f"types: {', '.join(TYPES)}"))
    else:
        problems += _rank_problems(parents, combination_type, svd_rank)
        if combination_type in DENSITY_TYPES and not (isinstance(density, int | float) and 0 < density <= 1):
            problems.append(Problem(field="density", message=f"{combination_type} keeps this share of each "
                                    f"adapter's weights: a number above 0 and at most 1 (got {density!r})"))
    if majority_sign_method not in SIGN_METHODS:
        problems.append(Problem(field="majority_sign_method", message=f"must be 'total' or 'frequency' "
                                                                      f"(got {majority_sign_method!r})"))
    return problems


def _count_problems(count: int) -> list[Problem]:
    if count < MIN_PARENTS:
        return [Problem(field="adapters", message=f"pick at least {MIN_PARENTS} adapters to combine (got {count})")]
    if count > MAX_PARENTS:
        return [Problem(field="adapters", message=f"combine at most {MAX_PARENTS} adapters at once (got {count})")]
    return []


def _parent_problems(parents: list[Parent]) -> list[Problem]:
    problems = []
    bases = {}
    for parent in parents:
        bases.setdefault(parent.base_model, []).append(parent.name)
    if len(bases) > 1:
        listed = "; ".join(f"{', '.join(repr(n) for n in names)} on {base}" for base, names in bases.items())
        problems.append(Problem(field="adapters", message=f"only adapters of one base combine: {listed}"))
    for parent in parents:
        config = parent.config
        if config.get("peft_type", "LORA") != "LORA":
            problems.append(Problem(field="adapters", message=f"'{parent.name}' is a {config['peft_type']} adapter; "
                                                              f"only LoRA adapters combine"))
        if config.get("use_dora"):
            problems.append(Problem(field="adapters", message=(
                f"'{parent.name}' is a DoRA adapter: PEFT's weighted combination mixes only the LoRA A and B "
                f"matrices and would lose its magnitude vectors")))
        if config.get("modules_to_save"):
            problems.append(Problem(field="adapters", message=(
                f"'{parent.name}' trains {', '.join(config['modules_to_save'])} fully (modules_to_save): PEFT "
                f"cannot weigh fully trained modules")))
        if config.get("target_parameters"):
            problems.append(Problem(field="adapters", message=(
                f"'{parent.name}' targets parameters (target_parameters), which PEFT's combination refuses")))
    if len({isinstance(parent.config.get("target_modules"), str) for parent in parents}) > 1:
        problems.append(Problem(field="adapters", message=(
            "PEFT cannot combine adapters whose target modules are a pattern with ones that are a list: "
            + ", ".join(f"'{p.name}' {p.config.get('target_modules')!r}" for p in parents))))
    return problems


def _weight_problems(weights: list[float], count: int) -> list[Problem]:
    if len(weights) != count:
        return [Problem(field="weights", message=f"give one weight per adapter ({count} adapters, {len(weights)} "
                                                 f"weights)")]
    problems = []
    for index, weight in enumerate(weights, start=1):
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not math.isfinite(weight):
            problems.append(Problem(field="weights", message=f"weight {index} is not a number ({weight!r})"))
        elif weight == 0 or abs(weight) > MAX_WEIGHT:
            problems.append(Problem(field="weights", message=(
                f"weight {index} must be from -{MAX_WEIGHT:g} to {MAX_WEIGHT:g} and not 0 (got {weight:g}); a "
                f"negative weight subtracts that adapter")))
    return problems


def _rank_problems(parents: list[Parent], combination_type: str, svd_rank: int) -> list[Problem]:
    ranks = {parent.name: rank_of(parent.config) for parent in parents}
    listed = ", ".join(f"'{name}' r={rank}" for name, rank in ranks.items())
    problems = []
    if combination_type in EQUAL_RANK_TYPES:
        uneven = any(parent.config.get("rank_pattern") for parent in parents)
        if len(set(ranks.values())) > 1 or uneven:
            problems.append(Problem(field="combination_type", message=(
                f"{combination_type} needs adapters of one rank ({listed}"
                f"{'; a per-module rank_pattern' if uneven else ''}): use cat or an svd type "
                f"({', '.join(SVD_TYPES)})")))
    if combination_type == "cat" and sum(ranks.values()) > MAX_RANK:
        problems.append(Problem(field="combination_type", message=(
            f"cat adds the ranks ({listed}: {sum(ranks.values())}), over the largest rank the studio loads "
            f"({MAX_RANK}); use an svd type")))
    if combination_type in SVD_TYPES:
        if not isinstance(svd_rank, int) or not 0 <= svd_rank <= MAX_RANK:
            problems.append(Problem(field="svd_rank", message=f"must be from 1 to {MAX_RANK}, or 0 for the largest "
                                                              f"parent rank (got {svd_rank!r})"))
    elif svd_rank:
        problems.append(Problem(field="svd_rank", message=f"applies only to the svd types ({', '.join(SVD_TYPES)}); "
                                                          f"set it to 0"))
    return problems
