"""The ``nnunet-mtl`` command line.

Every subcommand turns bad input into one line on stderr (``nnunet-mtl: error: <path>: <problem>``) and
exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from nnunet_mtl import __version__
from nnunet_mtl.console import progress_bar
from nnunet_mtl.errors import InputError, require_device


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


# ------------------------------------------------------------------------------------------ commands


def cmd_phantom(args: argparse.Namespace) -> int:
    from nnunet_mtl.data.phantom import PhantomSpec, generate_phantom

    spec = PhantomSpec(
        seed=args.seed,
        train=args.train,
        validation=args.validation,
        test=args.test,
        shape=args.shape,
        lesion_share=args.lesion_share,
        contrast=args.contrast,
    )
    start = time.perf_counter()
    out = generate_phantom(args.out_dir, spec, overwrite=args.overwrite, progress=progress_bar)
    total = sum(spec.train) + sum(spec.validation) + spec.test
    print(f"wrote {total} phantom cases to {out} in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from nnunet_mtl.data.prepare import prepare_dataset
    from nnunet_mtl.paths import ensure_nnunet_env

    ensure_nnunet_env()
    start = time.perf_counter()
    prepared = prepare_dataset(args.data_dir, args.dataset_id, name=args.name, progress=progress_bar)
    print(
        f"wrote {prepared.folder} ({prepared.num_training} training + {prepared.num_test} test cases, "
        f"fold 0 = original train/validation split) in {time.perf_counter() - start:.1f} s"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from nnunet_mtl.evaluation.outputs import evaluate_to_folder, format_stdout_table

    evaluation, written = evaluate_to_folder(args.pred, args.truth, args.labels, args.out)
    print(format_stdout_table(evaluation.to_json()))
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from nnunet_mtl.paths import ensure_nnunet_env

    ensure_nnunet_env()
    from nnunet_mtl.training.run import train

    start = time.perf_counter()
    folder = train(
        args.dataset_id,
        fold=args.fold,
        preset=args.preset,
        device=args.device,
        continue_training=args.continue_training,
        num_gpus=args.num_gpus,
        num_processes=args.num_processes,
        wandb=args.wandb,
        validation_only=args.validation_only,
    )
    done = "validated" if args.validation_only else "trained"
    print(f"{done} {args.preset} fold {args.fold} in {time.perf_counter() - start:.0f} s: {folder}")
    return 0


def cmd_trainer_path(args: argparse.Namespace) -> int:
    from nnunet_mtl.training.run import trainer_folder

    print(trainer_folder())
    return 0


def cmd_export_seg(args: argparse.Namespace) -> int:
    from nnunet_mtl.model.export import export_segmentation_model

    out = export_segmentation_model(
        args.model_dir, args.out, folds=args.folds, checkpoint_name=f"checkpoint_{args.checkpoint}.pth"
    )
    print(f"wrote the segmentation-only model to {out} (trainer nnUNetTrainer)")
    return 0


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model_dir is not None:
        return args.model_dir
    if args.dataset_id is None:
        raise InputError(None, "give --dataset-id N (with --preset) or --model-dir DIR")
    from nnunet_mtl.paths import ensure_nnunet_env, preset_model_folder

    ensure_nnunet_env()
    return preset_model_folder(args.dataset_id, args.preset)


def cmd_predict(args: argparse.Namespace) -> int:
    from nnunet_mtl.config import InferenceConfig
    from nnunet_mtl.inference.run import predict

    if args.status:
        return _predict_status(args)

    config = InferenceConfig(
        memory_budget_gb=args.memory_budget_gb, tile_step_size=args.tile_step_size, precision=args.precision
    )
    start = time.perf_counter()
    predictor, results = predict(
        args.input,
        args.output,
        _model_dir(args),
        args.fold,
        args.checkpoint,
        args.device,
        args.tta,
        config,
        overwrite=args.overwrite,
        progress=progress_bar,
        log=print,
        num_parts=args.num_parts,
        part_id=args.part_id,
        postprocess=not args.no_postprocessing,
        path=args.path,
    )
    model = predictor.model
    paths = {r.path for r in results}
    part = f" (part {args.part_id} of 0..{args.num_parts - 1})" if args.num_parts > 1 else ""
    post = predictor.postprocessing
    postprocessing = (
        "no postprocessing"
        if post.is_identity
        else f"postprocessing: lesion threshold {post.lesion_threshold:g}, "
        f"{', '.join(post.mask_steps) or 'no mask step'}, temperature {post.temperature:.3f}"
    )
    print(
        f"predicted {len(results)} cases{part} with {len(model.networks)} model(s) ({', '.join(model.members)}; "
        f"{'/'.join(sorted(paths))} path, {predictor.precision}{', TTA' if predictor.tta else ''}; {postprocessing}) "
        f"in {time.perf_counter() - start:.1f} s: masks and subtype_results.csv in {args.output}"
    )
    return 0


def _predict_status(args: argparse.Namespace) -> int:
    """``predict --status``: exit 0 when every case is finished, 1 while some are missing."""
    from nnunet_mtl.inference.run import status

    finished, missing, settings = status(args.input, args.output)
    total = len(finished) + len(missing)
    print(f"{len(finished)} of {total} cases of {args.input} finished in {args.output}; {len(missing)} missing")
    for name in missing:
        print(f"missing {name}")
    if settings > 1:
        print(f"the finished cases were predicted with {settings} different settings (models or options)")
    return 0 if not missing and settings <= 1 else 1


def cmd_postprocess(args: argparse.Namespace) -> int:
    from nnunet_mtl.training.postprocess import determine_for_model, format_postprocessing

    postprocessing, path = determine_for_model(_model_dir(args), args.fold)
    print(format_postprocessing(postprocessing))
    print(f"wrote {path}; `predict` applies it (--no-postprocessing to leave it out)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from nnunet_mtl.evaluation.compare import compare_folders, format_comparison, write_comparison

    if len(args.pred) != 2:
        raise InputError(None, f"give --pred exactly twice (A, then B), got {len(args.pred)}")
    comparison = compare_folders(args.pred[0], args.pred[1], args.truth, args.labels)
    print(format_comparison(comparison))
    out = args.out or Path(args.pred[1]) / "comparison"
    print(f"wrote {', '.join(str(p) for p in write_comparison(comparison, out))}")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from nnunet_mtl.benchmark.run import check_inputs, run_benchmark, select_methods
    from nnunet_mtl.inference.cases import find_input_cases

    require_device(args.device)
    if len(args.checkpoint) > 1:
        raise InputError(None, "benchmark compares one checkpoint; give a single --checkpoint")
    if args.max_cases < 0:
        raise InputError(None, f"--max-cases must be >= 0, got {args.max_cases}")
    methods = select_methods(args.methods)
    cases = find_input_cases(args.input)
    if args.max_cases:
        cases = cases[: args.max_cases]
    model_dir = _model_dir(args)
    check_inputs(model_dir, cases, args.out, args.truth, args.labels, args.fold, args.checkpoint[0])
    benchmark = run_benchmark(
        model_dir,
        cases,
        args.out,
        device=args.device,
        truth_dir=args.truth,
        labels=args.labels,
        folds=args.fold,
        checkpoint=args.checkpoint[0],
        methods=methods,
        log=lambda message: print(message, file=sys.stderr),
    )
    print(benchmark["table"])
    print(f"wrote {args.out / 'benchmark.json'} and {args.out / 'benchmark.md'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nnunet_mtl.report.build import build_report, collect_sources, default_out_dir

    sources = collect_sources(
        args.model_dir, args.fold, args.pred, args.truth, args.labels, args.images, args.benchmark
    )
    report = build_report(sources, args.out or default_out_dir(args.model_dir, args.pred))
    print(f"wrote {report} (self-contained), report.md, metrics.json and the PNGs in {report.parent}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from nnunet_mtl.demo import run_demo, summary_table
    from nnunet_mtl.io import check_writable_dir

    check_writable_dir(args.out)
    metrics = run_demo(args.out, seed=args.seed)
    print()
    print(f"phantom test split ({metrics['num_cases']} cases), whole volume:")
    print(summary_table(metrics))
    print()
    print(f"report: {(args.out / 'report' / 'report.html').resolve()}")
    return 0


# ------------------------------------------------------------------------------------------ parser


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too, with exit code 2 (sub-commands' parsers are of this class as well)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"nnunet-mtl: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nnunet-mtl",
        description="Multitask nnU-Net v2 for 3D CT pancreas: segmentation and lesion subtype in one pass.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("phantom", help="write a synthetic CT phantom in the assignment layout")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train",
        type=_int_list,
        default=(10, 14, 12),
        metavar="A,B,C",
        help="training cases per subtype (default 10,14,12)",
    )
    p.add_argument(
        "--validation",
        type=_int_list,
        default=(4, 4, 4),
        metavar="A,B,C",
        help="validation cases per subtype (default 4,4,4)",
    )
    p.add_argument("--test", type=int, default=12, metavar="N", help="test cases (default 12)")
    p.add_argument(
        "--shape",
        type=_int_list,
        default=(32, 48, 48),
        metavar="Z,Y,X",
        help="median volume size in voxels; each case varies by up to 15%% (default 32,48,48: like the real "
        "data under nnU-Net's default plan, the tiny plan's patch covers a median case)",
    )
    p.add_argument(
        "--lesion-share",
        type=float,
        metavar="F",
        help="lesion volume as a share of the gland's, +-30%% per case (real data: about 0.03-0.3; default: "
        "lesions spanning 55-95%% of the gland's thickness)",
    )
    p.add_argument(
        "--contrast",
        type=float,
        default=1.0,
        metavar="F",
        help="scale of each lesion's intensity difference to its gland; below 1 the subtypes look more alike",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("prepare", help="convert the assignment layout into an nnU-Net v2 raw dataset")
    p.add_argument("data_dir", type=Path, metavar="DATA_DIR")
    p.add_argument("--dataset-id", type=int, required=True, metavar="N")
    p.add_argument("--name", default="PancreasMTL", help="dataset name (default PancreasMTL)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("evaluate", help="whole-volume Dice and subtype metrics of a prediction folder")
    p.add_argument(
        "--pred",
        type=Path,
        required=True,
        metavar="DIR",
        help="predicted masks <case>.nii.gz and subtype_results.csv",
    )
    p.add_argument(
        "--truth",
        type=Path,
        required=True,
        metavar="DIR",
        help="truth masks: a split folder with subtypeK/ folders, or a flat folder of masks",
    )
    p.add_argument("--labels", type=Path, metavar="CSV", help="truth subtypes (Names,Subtype)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default PRED/evaluation)")
    p.set_defaults(func=cmd_evaluate)

    from nnunet_mtl.config import PRESETS, InferenceConfig

    p = sub.add_parser("train", help="plan/preprocess where missing, then train the multitask nnU-Net")
    p.add_argument("--dataset-id", type=int, required=True, metavar="N")
    p.add_argument("--fold", type=int, default=0, help="fold 0 is the original train/validation split")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="tiny",
        help="tiny: reduced plan and short schedule for CPUs; default: nnU-Net's plan and schedule; "
        "resenc-m: nnU-Net's ResEnc-M plan (default tiny)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--num-gpus", type=int, default=1, help="> 1: nnU-Net's DDP on that many GPUs")
    p.add_argument(
        "--continue",
        dest="continue_training",
        action="store_true",
        help="resume from the latest checkpoint (phase, class weights, best metric, early stopping)",
    )
    p.add_argument(
        "--validation-only",
        action="store_true",
        help="no training: run the final validation of checkpoint_best again (nnU-Net's --val --val_best): the "
        "inference choice, the validation outputs and the postprocessing",
    )
    p.add_argument("--num-processes", type=int, default=2, help="processes for nnU-Net's preprocessing")
    p.add_argument(
        "--wandb",
        action="store_true",
        help="also log to Weights & Biases, offline unless nnUNet_wandb_mode=online (pip install 'nnunet-mtl[wandb]')",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("trainer-path", help="print the folder to put in nnUNet_extTrainer")
    p.set_defaults(func=cmd_trainer_path)

    p = sub.add_parser("export-seg", help="export the segmentation part as a stock nnU-Net model folder")
    p.add_argument("--model-dir", type=Path, required=True, metavar="DIR")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--folds", type=int, nargs="+", default=[0])
    p.add_argument("--checkpoint", choices=["best", "final"], default="best")
    p.set_defaults(func=cmd_export_seg)

    p = sub.add_parser("predict", help="masks and subtypes for a folder of CT images (one forward pass per case)")
    _add_model_arguments(p)
    p.add_argument("-i", "--input", type=Path, required=True, metavar="IN_DIR", help="<case>_0000.nii.gz images")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average both outputs over all mirrorings (8 passes), or not (--no-tta); default: as the model "
        "folder's inference choice (fold_K/nnunet_mtl_inference.json, made on the validation split after training)",
    )
    p.add_argument(
        "--path",
        choices=["auto", "whole", "sliding"],
        default=None,
        help="auto: one pass where its memory estimate fits --memory-budget-gb, else the sliding window; whole or "
        "sliding to force one; default: as the model folder's inference choice",
    )
    p.add_argument("--overwrite", action="store_true", help="predict again cases already in OUT_DIR")
    p.add_argument(
        "--num-parts",
        type=int,
        default=1,
        metavar="N",
        help="split the cases into N parts (nnU-Net's -num_parts), e.g. one per GPU or SLURM array task",
    )
    p.add_argument("--part-id", type=int, default=0, metavar="K", help="the part this run predicts, 0..N-1")
    p.add_argument(
        "--status",
        action="store_true",
        help="only report which cases of IN_DIR are finished in OUT_DIR and list the missing ones "
        "(exit 1 while any is missing); loads no model",
    )
    p.add_argument(
        "--memory-budget-gb",
        type=float,
        default=InferenceConfig.memory_budget_gb,
        metavar="GB",
        help="whole-volume forward when its estimated peak memory fits, else sliding window "
        f"(default {InferenceConfig.memory_budget_gb:g})",
    )
    p.add_argument("--tile-step-size", type=float, default=InferenceConfig.tile_step_size, metavar="F")
    p.add_argument(
        "--no-postprocessing",
        action="store_true",
        help="leave out the model folder's postprocessing (mask steps and temperature of `nnunet-mtl postprocess`)",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        default="auto",
        help="auto: fp16 autocast on CUDA, fp32 on CPU (faster than bf16 on CPUs without bf16 units)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "postprocess",
        help="determine mask postprocessing and the subtype temperature on every fold's final validation",
    )
    p.add_argument("--dataset-id", type=int, metavar="N", help="the model that `train --dataset-id N` wrote")
    p.add_argument("--preset", choices=list(PRESETS), default="tiny", help="the preset it was trained with")
    p.add_argument("--model-dir", type=Path, metavar="DIR", help="a model folder (instead of --dataset-id)")
    p.add_argument("--fold", type=int, nargs="+", metavar="F", help="folds to pool (default: all validated)")
    p.set_defaults(func=cmd_postprocess)

    p = sub.add_parser("compare", help="paired per-case comparison of two prediction folders against one truth")
    p.add_argument("--pred", type=Path, action="append", required=True, metavar="DIR", help="give twice: A, then B")
    p.add_argument("--truth", type=Path, required=True, metavar="DIR", help="truth masks (split or flat folder)")
    p.add_argument("--labels", type=Path, metavar="CSV", help="truth subtypes (Names,Subtype)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output folder (default PRED_B/comparison)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("benchmark", help="time stock nnU-Net, the seed's way and nnunet-mtl on the same weights")
    _add_model_arguments(p)
    p.add_argument("-i", "--input", type=Path, required=True, metavar="IN_DIR", help="<case>_0000.nii.gz images")
    p.add_argument("--truth", type=Path, metavar="DIR", help="truth masks (split folder or flat folder)")
    p.add_argument("--labels", type=Path, metavar="CSV", help="truth subtypes (Names,Subtype)")
    p.add_argument("--out", type=Path, default=Path("benchmark"), metavar="DIR", help="default ./benchmark")
    p.add_argument("--max-cases", type=int, default=0, metavar="N", help="only the first N cases (0: all)")
    p.add_argument(
        "--methods",
        nargs="+",
        metavar="ROW",
        help="rows among b c d c_alt to run besides the references (a) and (a'), which always run (default: all)",
    )
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("report", help="HTML report: metrics vs targets, training curves, confusion, cases, overlays")
    p.add_argument("--model-dir", type=Path, required=True, metavar="DIR", help="the trained model folder")
    p.add_argument("--fold", type=int, metavar="F", help="fold whose training log is shown (default: the first)")
    p.add_argument("--pred", type=Path, metavar="DIR", help="predictions to score (default: the final validation)")
    p.add_argument("--truth", type=Path, metavar="DIR", help="truth masks for --pred (split or flat folder)")
    p.add_argument("--labels", type=Path, metavar="CSV", help="truth subtypes (Names,Subtype)")
    p.add_argument("--images", type=Path, metavar="DIR", help="CT images for the overlays (default: --truth)")
    p.add_argument("--benchmark", type=Path, metavar="PATH", help="benchmark.json (or its folder) to include")
    p.add_argument("--out", type=Path, metavar="DIR", help="default PRED/report, else MODEL_DIR/report")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="phantom -> prepare -> train (tiny, CPU) -> predict -> evaluate -> report")
    p.add_argument("--out", type=Path, default=Path("demo_out"), metavar="DIR", help="default ./demo_out")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    p.set_defaults(func=cmd_demo)
    return parser


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    from nnunet_mtl.config import PRESETS

    p.add_argument("--dataset-id", type=int, metavar="N", help="the model that `train --dataset-id N` wrote")
    p.add_argument("--preset", choices=list(PRESETS), default="tiny", help="the preset it was trained with")
    p.add_argument("--model-dir", type=Path, metavar="DIR", help="a model folder (instead of --dataset-id)")
    p.add_argument("--fold", type=int, nargs="+", metavar="F", help="folds to average (default: all present)")
    p.add_argument(
        "--checkpoint",
        nargs="+",
        choices=["best", "final"],
        default=["best"],
        help="checkpoint(s) to average (default best)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except InputError as err:
        if args.debug:
            traceback.print_exc()
        print(f"nnunet-mtl: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("nnunet-mtl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
