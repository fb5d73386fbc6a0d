"""Linear probes of where a trained encoder keeps subtype information: which stages to pool, and how.

    python benchmarks/head_probe.py --model-dir MODEL -i PHANTOM/test --truth PHANTOM/test_key [-i ... --truth ...]

For every case: nnU-Net's preprocessing, one whole-volume pass of the model's encoder and decoder, then each
encoder stage's features averaged over (a) the predicted lesion where its probability reaches 0.5, falling
back to the gland where no lesion is predicted (the head's pooling), (b) the soft predicted lesion probability
plus 0.001 (the earlier head's pooling), (c) the true lesion. A shrinkage LDA and a logistic regression
(scikit-learn, standardised features) are scored by 5-fold stratified cross-validation on the pooled
features of: each stage alone, the bottleneck, and all stages together. The head's weights are not used,
only the encoder's and decoder's, so the model may come from any version of the head.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def pooled_features(model_dir: Path, images: Path, truth: Path, threshold: float = 0.5) -> dict:
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mtl.config import HeadConfig, MultitaskConfig
    from nnunet_mtl.data.labels import LESION, round_labels
    from nnunet_mtl.data.subtype_csv import read_subtype_csv
    from nnunet_mtl.evaluation.evaluate import find_truth
    from nnunet_mtl.inference.cases import find_input_cases, read_image
    from nnunet_mtl.inference.forward import divisibility
    from nnunet_mtl.io import array_of, read_volume
    from nnunet_mtl.model.checkpoint import read_model_json, segmentation_weights
    from nnunet_mtl.model.multitask import build_multitask_network, predicted_structure_maps

    plans = read_model_json(model_dir / "plans.json")
    dataset_json = read_model_json(model_dir / "dataset.json")
    manager = PlansManager(plans)
    configuration = manager.get_configuration("3d_fullres")
    labels = manager.get_label_manager(dataset_json)
    stages = configuration.network_arch_init_kwargs["n_stages"]
    config = MultitaskConfig(head=HeadConfig(stages=tuple(range(stages))))
    network = build_multitask_network(
        configuration, 1, labels.num_segmentation_heads, config, False, labels.has_regions
    )
    checkpoint = torch.load(model_dir / "fold_0" / "checkpoint_best.pth", map_location="cpu", weights_only=True)
    network.unet.load_state_dict(segmentation_weights(checkpoint["network_weights"]))
    network.eval()
    preprocessor = configuration.preprocessor_class(verbose=False)
    divisor = list(divisibility(configuration.pool_op_kernel_sizes))
    truths = {t.name: t for t in find_truth(truth)}  # a split folder (subtypeK/) or a flat one with labels.csv
    subtypes = {n: t.subtype for n, t in truths.items()} if None not in {t.subtype for t in truths.values()} else None
    subtypes = subtypes or read_subtype_csv(truth / "labels.csv")
    rows: dict[str, list] = {"case": [], "subtype": [], "learned": [], "soft": [], "truth": []}
    for case in find_input_cases(images):
        image, properties = read_image(case.image)
        mask_path = truths[case.name].mask
        mask = round_labels(array_of(read_volume(mask_path)), mask_path)[None].astype(np.int8)
        data, seg, _ = preprocessor.run_case_npy(image, mask, properties, manager, configuration, dataset_json)
        padded, _ = pad_nd_image(
            torch.from_numpy(data), configuration.patch_size, "constant", {"value": 0}, True, divisor
        )
        seg, _ = pad_nd_image(
            torch.from_numpy((seg == LESION).astype(np.float32)),
            configuration.patch_size,
            "constant",
            {"value": 0},
            True,
            divisor,
        )
        with torch.inference_mode():
            skips = network.unet.encoder(padded[None])
            maps = predicted_structure_maps(network.unet.decoder(skips), labels.has_regions)
        true_lesion = seg[None] if seg.sum() > 0 else torch.ones_like(seg[None])
        for key, weights in (
            ("learned", _head_weights(maps, threshold)),
            ("soft", maps[:, 1:] + 1e-3),
            ("truth", true_lesion),
        ):
            rows[key].append([_pool(skip, weights) for skip in skips])
        rows["case"].append(case.name)
        rows["subtype"].append(subtypes[case.name])
    return rows


def _head_weights(maps: torch.Tensor, threshold: float) -> torch.Tensor:
    weights = maps * (maps >= threshold)
    lesion, gland = weights[:, 1:], weights[:, :1]
    if lesion.sum() == 0 or lesion.sum() < 0.005 * gland.sum():
        lesion = gland if gland.sum() > 0 else torch.ones_like(gland)
    return lesion


def _pool(features: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
    weights = torch.nn.functional.adaptive_avg_pool3d(weights.float(), features.shape[2:])
    return ((features * weights).sum((2, 3, 4)) / weights.sum((2, 3, 4)).clamp_min(1e-12))[0].numpy()


def probe(rows: dict, folds: int = 5) -> dict:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.array(rows["subtype"])
    stages = len(rows["truth"][0])
    sets = {f"stage {s}": [s] for s in range(stages)} | {
        "stage 1 + bottleneck": [1, stages - 1],
        "all stages": list(range(stages)),
    }
    splitter = StratifiedKFold(folds, shuffle=True, random_state=0)
    results = {}
    for pooling in ("learned", "soft", "truth"):
        for name, chosen in sets.items():
            x = np.stack([np.concatenate([case[s] for s in chosen]) for case in rows[pooling]])
            lda = make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"))
            logistic = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
            results[f"{pooling} | {name}"] = {
                "lda": float(cross_val_score(lda, x, y, cv=splitter).mean()),
                "logistic": float(cross_val_score(logistic, x, y, cv=splitter).mean()),
                "features": int(x.shape[1]),
            }
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("-i", "--images", type=Path, nargs="+", required=True)
    parser.add_argument("--truth", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows: dict[str, list] = {}
    for images, truth in zip(args.images, args.truth):
        for key, values in pooled_features(args.model_dir, images, truth).items():
            rows.setdefault(key, []).extend(values)
    results = probe(rows)
    print(f"{len(rows['case'])} cases; 5-fold cross-validated accuracy")
    print("| pooling | stages | features | shrinkage LDA | logistic regression |\n|---|---|---|---|---|")
    for key, r in results.items():
        pooling, stages = key.split(" | ")
        print(f"| {pooling} | {stages} | {r['features']} | {r['lda']:.3f} | {r['logistic']:.3f} |")
    if args.out:
        args.out.write_text(json.dumps({"cases": rows["case"], "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
