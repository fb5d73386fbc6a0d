"""Do the lesion's core and rim statistics help a readout where the predicted outline is off by a voxel?

    python benchmarks/context_statistics.py --out DIR [--settings default small-lesions] [--seeds 5 6]
        [--result RESULT.json]

No network: for each phantom (``nnunet-mtl phantom`` with many training cases per subtype) the head's own
``intensity_statistics`` are computed from the image and a lesion mask, without and with
``context=True`` (the core and rim statistics of ``HeadConfig.lesion_context_statistics``). The mask is the
reference and three stand-ins for a prediction's boundary errors: eroded and dilated by one voxel in-plane
(within the gland), and shifted by one voxel in both in-plane axes. Each feature set is scored as the shipped
readout is fitted (``training/readout.py: fit_readout``): on random training splits of the phantom's default
size (10, 14 and 12 cases per subtype), macro F1 on every other case. Reported: the mean over the splits, and
the paired difference (with context minus without) with the 2.5 and 97.5 percentiles over the splits (the
spread from one training split to another, not a confidence interval of the mean).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
SETTINGS = {"default": [], "small-lesions": ["--lesion-share", "0.04"]}
SPLIT = (10, 14, 12)  # training cases per subtype, as the phantom's default training split
MASKS = ("reference", "eroded", "dilated", "shifted")


def make_phantom(out: Path, setting: str, seed: int, per_class: int) -> Path:
    folder = out / f"{setting}-s{seed}"
    if not (folder / "phantom.json").is_file():
        counts = ",".join([str(per_class)] * 3)
        args = ["phantom", str(folder), "--seed", str(seed), "--train", counts, "--validation", "2,2,2"]
        subprocess.run(
            [sys.executable, "-m", "nnunet_mtl", *args, "--test", "1", "--overwrite", *SETTINGS[setting]],
            check=True,
            env={"PYTHONPATH": str(SRC)},
            stdout=subprocess.DEVNULL,
        )
    return folder


def training_cases(folder: Path):
    from nnunet_mtl.data.labels import LESION
    from nnunet_mtl.io import array_of, read_volume

    for subtype in range(3):
        for mask in sorted((folder / "train" / f"subtype{subtype}").glob("quiz_*.nii.gz")):
            if mask.name.endswith("_0000.nii.gz"):
                continue
            labels = np.rint(array_of(read_volume(mask))).astype(np.int16)
            image = array_of(read_volume(mask.with_name(mask.name.replace(".nii.gz", "_0000.nii.gz"))))
            yield image.astype(np.float32), labels == LESION, labels > 0, subtype


def perturbed(lesion: np.ndarray, whole: np.ndarray, kind: str) -> np.ndarray:
    from scipy import ndimage

    in_plane = np.zeros((1, 3, 3), bool)
    in_plane[0] = True
    if kind == "eroded":
        eroded = ndimage.binary_erosion(lesion, in_plane)
        return eroded if eroded.any() else lesion
    if kind == "dilated":
        return ndimage.binary_dilation(lesion, in_plane) & whole
    if kind == "shifted":
        return np.roll(lesion, (1, 1), (1, 2)) & whole
    return lesion


def features(folder: Path) -> tuple[dict, np.ndarray]:
    import torch

    from nnunet_mtl.model.head import intensity_statistics

    rows = {(kind, context): [] for kind in MASKS for context in (False, True)}
    subtypes = []
    for image, lesion, whole, subtype in training_cases(folder):
        subtypes.append(subtype)
        x, w = (torch.from_numpy(image)[None, None], torch.from_numpy(whole.astype(np.float32))[None, None])
        for kind in MASKS:
            m = torch.from_numpy(perturbed(lesion, whole, kind).astype(np.float32))[None, None]
            for context in (False, True):
                rows[kind, context].append(intensity_statistics(x, m, w, context)[0].numpy())
    return {key: np.array(value) for key, value in rows.items()}, np.array(subtypes)


def scores(x: np.ndarray, y: np.ndarray, splits: int, seed: int) -> np.ndarray:
    from sklearn.metrics import f1_score

    from nnunet_mtl.training.readout import fit_readout

    rng = np.random.default_rng(seed)
    result = []
    for _ in range(splits):
        train = np.concatenate([rng.choice(np.flatnonzero(y == c), n, replace=False) for c, n in enumerate(SPLIT)])
        test = np.setdiff1d(np.arange(len(y)), train)
        readout = fit_readout(x[train], y[train], 3)
        predicted = (x[test] @ readout.weight.T + readout.bias).argmax(1)
        result.append(f1_score(y[test], predicted, average="macro"))
    return np.array(result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the phantoms")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 6])
    parser.add_argument("--per-class", type=int, default=80, help="training cases per subtype in each phantom")
    parser.add_argument("--splits", type=int, default=40)
    parser.add_argument("--result", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(SRC))
    results = []
    for setting in args.settings:
        for seed in args.seeds:
            rows, y = features(make_phantom(args.out, setting, seed, args.per_class))
            for kind in MASKS:
                without, with_context = (scores(rows[kind, c], y, args.splits, seed) for c in (False, True))
                gain = with_context - without
                row = {
                    "setting": setting,
                    "seed": seed,
                    "mask": kind,
                    "macro_f1_without": float(without.mean()),
                    "macro_f1_with": float(with_context.mean()),
                    "gain": [float(gain.mean()), *map(float, np.percentile(gain, [2.5, 97.5]))],
                }
                results.append(row)
                print(
                    f"{setting:14s} s{seed} {kind:9s} without {row['macro_f1_without']:.3f} "
                    f"with {row['macro_f1_with']:.3f} gain {gain.mean():+.3f} "
                    f"[{row['gain'][1]:+.3f}, {row['gain'][2]:+.3f}]",
                    flush=True,
                )
    if args.result:
        args.result.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
