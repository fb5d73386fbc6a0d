"""Linear probes of where a trained encoder keeps subtype information: which stages to pool, and how.

    python benchmarks/head_probe.py --model-dir MODEL -i PHANTOM/test --truth PHANTOM/test_key [-i ... --truth ...]

For every case: nnU-Net's preprocessing, one whole-volume pass of the model's encoder and decoder, then each
encoder stage's features averaged over (a) the predicted lesion where its probability reaches 0.5, falling
back to the gland where no lesion is predicted (the head's pooling), (b) the soft predicted lesion probability
plus 0.001 (the earlier head's pooling), (c) the true lesion. A shrinkage LDA and a logistic regression
(scikit-learn, standardised features) are scored by 5-fold stratified cross-validation on the pooled
features of: each stage alone, the bottleneck, and all stages together. The head's weights are not used,
only the encoder's and decoder's, so the model may come from any version of the head.

    python benchmarks/head_probe.py --model-dir MODEL -i PHANTOM/test --truth PHANTOM/test_key \
        --fit-images PHANTOM/train --fit-truth PHANTOM/train

With ``--fit-images``/``--fit-truth`` (a transfer probe, what ``HeadConfig.readout`` decides): classifiers are
fitted on the fit set's features pooled over (c) the true lesion, as the head's MLP learns in training, or (a)
the predicted lesion, as the fitted LDA readout is, and scored by macro F1 on the ``-i`` set's predicted
pooling (a), as users get it. Feature sets then include the head's six intensity statistics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def pooled_features(
    model_dir: Path, images: Path, truth: Path, threshold: float = 0.5, flips: tuple[tuple[int, ...], ...] = ((),)
) -> dict:
    """Every case's pooled features (one row per case and entry of ``flips``: the spatial axes the input is
    flipped along before its pass; the default, one unflipped pass)."""
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mtl.config import HeadConfig, MultitaskConfig
    from nnunet_mtl.data.labels import LESION, round_labels
    from nnunet_mtl.evaluation.evaluate import find_truth, truth_subtypes
    from nnunet_mtl.inference.cases import find_input_cases, read_image
    from nnunet_mtl.inference.forward import divisibility
    from nnunet_mtl.io import array_of, read_volume
    from nnunet_mtl.model.checkpoint import read_model_json, segmentation_weights
    from nnunet_mtl.model.head import intensity_statistics
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
    truths = {t.name: t for t in find_truth(truth)}
    subtypes = truth_subtypes(truth)  # a split folder (subtypeK/) or a flat one with labels.csv
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
            torch.from_numpy(seg.astype(np.float32)),
            configuration.patch_size,
            "constant",
            {"value": 0},
            True,
            divisor,
        )
        for axes in flips:
            dims = [a + 2 for a in axes]  # after the batch and channel dimensions
            x, reference = torch.flip(padded[None], dims), torch.flip(seg[None], dims)
            with torch.inference_mode():
                skips = network.unet.encoder(x)
                maps = predicted_structure_maps(network.unet.decoder(skips), labels.has_regions)
            lesion, gland = (reference == LESION).float(), (reference > 0).float()
            true_lesion = lesion if lesion.sum() > 0 else torch.ones_like(lesion)
            learned, predicted_gland = _head_weights(maps, threshold)
            for key, weights, whole in (
                ("learned", learned, predicted_gland),
                ("soft", maps[:, 1:] + 1e-3, maps[:, :1]),
                ("truth", true_lesion, gland),
            ):
                statistics = intensity_statistics(x, weights, whole)[0].numpy()
                rows[key].append([_pool(skip, weights) for skip in skips] + [statistics])
            rows["case"].append(case.name)
            rows["subtype"].append(subtypes[case.name])
    return rows


def _head_weights(maps: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's lesion pooling weights (the gland's where the lesion found is too small) and the gland's."""
    weights = maps * (maps >= threshold)
    lesion, gland = weights[:, 1:], weights[:, :1]
    if lesion.sum() == 0 or lesion.sum() < 0.005 * gland.sum():
        lesion = gland if gland.sum() > 0 else torch.ones_like(gland)
    return lesion, gland


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
    stages = len(rows["truth"][0]) - 1  # the last entry: intensity statistics
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


def transfer(fit: dict, test: dict) -> dict:
    """Macro F1 on ``test``'s predicted pooling of classifiers fitted on ``fit``'s true or predicted pooling."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    stages = len(fit["truth"][0]) - 1
    sets = {
        "intensity statistics": [stages],
        "all stages": list(range(stages)),
        "all stages + statistics (the head's input)": list(range(stages + 1)),
    }
    classes = sorted(set(fit["subtype"]))
    results = {}
    for name, chosen in sets.items():
        for fitted_on in ("truth", "learned"):
            x = np.stack([np.concatenate([case[s] for s in chosen]) for case in fit[fitted_on]])
            x_test = np.stack([np.concatenate([case[s] for s in chosen]) for case in test["learned"]])
            lda = LinearDiscriminantAnalysis(
                solver="lsqr", shrinkage="auto", priors=np.full(len(classes), 1 / len(classes))
            )
            logistic = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
            scores = {}
            for key, classifier in (("lda", lda), ("logistic", logistic)):
                predicted = classifier.fit(x, fit["subtype"]).predict(x_test)
                scores[key] = float(f1_score(test["subtype"], predicted, average="macro"))
            results[f"{fitted_on} | {name}"] = {**scores, "features": int(x.shape[1])}
    return results


def _features(model_dir: Path, images: list[Path], truths: list[Path]) -> dict:
    rows: dict[str, list] = {}
    for image_dir, truth in zip(images, truths):
        for key, values in pooled_features(model_dir, image_dir, truth).items():
            rows.setdefault(key, []).extend(values)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("-i", "--images", type=Path, nargs="+", required=True)
    parser.add_argument("--truth", type=Path, nargs="+", required=True)
    parser.add_argument("--fit-images", type=Path, nargs="+", help="transfer probe: the set classifiers are fitted on")
    parser.add_argument("--fit-truth", type=Path, nargs="+")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rows = _features(args.model_dir, args.images, args.truth)
    if args.fit_images:
        fit = _features(args.model_dir, args.fit_images, args.fit_truth or args.fit_images)
        results = transfer(fit, rows)
        print(f"fitted on {len(fit['case'])} cases, macro F1 on the predicted pooling of {len(rows['case'])} cases")
        print(
            "| fitted on the pooling of | features | n | shrinkage LDA | logistic regression |\n|---|---|---|---|---|"
        )
        for key, r in results.items():
            pooling, name = key.split(" | ")
            pooling = "the true lesion" if pooling == "truth" else "the predicted lesion"
            print(f"| {pooling} | {name} | {r['features']} | {r['lda']:.3f} | {r['logistic']:.3f} |")
        if args.out:
            args.out.write_text(
                json.dumps({"fit_cases": fit["case"], "cases": rows["case"], "results": results}, indent=2) + "\n"
            )
        return 0
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
