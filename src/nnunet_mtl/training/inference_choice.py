"""Choose ``predict``'s path and mirroring on the validation split at the end of training, as nnU-Net
chooses its postprocessing there.

Stock nnU-Net's inference (the sliding window at the tile step, every mirroring) is the reference. The other
candidates (``inference/choice.py``: one pass, the sliding window, one pass with mirroring) are tried in that
order, cheapest first; the first whose mean Dice of each region is at most ``choice_dice_tolerance`` below the
reference's and which classifies at most ``choice_subtype_cases`` fewer cases right is chosen; where none is,
stock's own. Why per model and not one fixed rule: on the same phantoms a 7.5-minute model lost 0.025
lesion Dice to stock without mirroring while a 3x longer one was within 0.002 (README, "Inference path").

For the comparison a region empty in both the truth and the prediction counts as Dice 1, so that a
candidate's false positive on a case without that region counts against it (the mean of ``evaluate`` leaves
such cases out).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from nnunet_mtl.config import InferenceConfig
from nnunet_mtl.data.labels import REGIONS
from nnunet_mtl.inference.choice import CANDIDATES, STOCK, InferenceChoice

Validate = Callable[[InferenceChoice], Sequence]  # the validated cases (training/validation.py: ValidatedCase)
VERDICTS = {None: "reference", True: "keeps up", False: "does not keep up"}  # by CandidateScore.meets_reference


@dataclass(frozen=True)
class CandidateScore:
    name: str
    path: str
    mirroring: bool
    dice: dict[str, float]  # mean over the cases per region (both empty: 1)
    correct: int  # cases whose subtype is right
    cases: int
    forward_seconds_per_case: float
    forward_passes_per_case: float
    paths: dict[str, int]  # cases per path the engine ran ("auto" is one pass only where memory allowed)
    meets_reference: bool | None = None  # None for the reference itself


def score(choice: InferenceChoice, cases: Sequence) -> CandidateScore:
    dice = {
        region: float(np.mean([1.0 if np.isnan(c.dice[region]) else c.dice[region] for c in cases]))
        for region in REGIONS
    }
    return CandidateScore(
        choice.name,
        choice.path,
        choice.mirroring,
        dice,
        sum(c.subtype_pred == c.subtype_true for c in cases),
        len(cases),
        float(np.mean([c.forward_seconds for c in cases])),
        float(np.mean([c.forward_passes for c in cases])),
        dict(Counter(c.path for c in cases)),
    )


def meets(candidate: CandidateScore, reference: CandidateScore, config: InferenceConfig) -> bool:
    """Dice of every region within the tolerance of the reference's, and at most the allowed subtypes fewer."""
    slack = config.choice_dice_tolerance + 1e-9  # inclusive, whatever the rounding of the subtraction
    close = all(candidate.dice[r] >= reference.dice[r] - slack for r in REGIONS)
    return close and candidate.correct >= reference.correct - config.choice_subtype_cases


def candidates(has_mirroring: bool) -> tuple[InferenceChoice, list[InferenceChoice]]:
    """The reference (stock's tiles and flips; without mirror axes, its tiles) and the others, cheapest first."""
    reference = STOCK if has_mirroring else InferenceChoice(STOCK.path, False)
    others = [c for c in CANDIDATES if c != reference and (has_mirroring or not c.mirroring)]
    return reference, others


def choose_inference(validate: Validate, config: InferenceConfig, has_mirroring: bool, source: str) -> InferenceChoice:
    """Run the reference and then the candidates (cheapest first) through ``validate`` until one keeps up."""
    reference_choice, others = candidates(has_mirroring)
    reference = score(reference_choice, validate(reference_choice))
    scores = [reference]
    chosen = reference_choice
    for candidate in others:
        result = score(candidate, validate(candidate))
        ok = meets(result, reference, config)
        scores.append(replace(result, meets_reference=ok))
        if ok:
            chosen = candidate
            break
    determined_on = {
        "source": source,
        "cases": reference.cases,
        "reference": reference_choice.name,
        "dice_tolerance": config.choice_dice_tolerance,
        "subtype_cases": config.choice_subtype_cases,
        "tile_step_size": config.tile_step_size,
        "candidates": [asdict(s) for s in scores],
    }
    return InferenceChoice(chosen.path, chosen.mirroring, determined_on)


def format_choice(choice: InferenceChoice) -> str:
    info = choice.determined_on
    lines = [
        f"inference chosen on {info['cases']} validation cases ({info['source']}): {choice.name} (the cheapest "
        f"within {info['dice_tolerance']:g} Dice per region and {info['subtype_cases']} subtype(s) of "
        f"{info['reference']})"
    ]
    for s in info["candidates"]:
        verdict = VERDICTS[s["meets_reference"]]
        lines.append(
            f"  {s['name']:<31} Dice whole {s['dice']['whole_pancreas']:.4f}, lesion {s['dice']['lesion']:.4f}, "
            f"subtype right {s['correct']}/{s['cases']}, {s['forward_passes_per_case']:.1f} passes and "
            f"{s['forward_seconds_per_case']:.2f} s per case ({_paths(s.get('paths', {}))}): {verdict}"
        )
    return "\n".join(lines)


def _paths(paths: dict[str, int]) -> str:
    names = {"whole": "one pass", "sliding": "sliding window"}
    return ", ".join(f"{count} {names.get(path, path)}" for path, count in sorted(paths.items()))
