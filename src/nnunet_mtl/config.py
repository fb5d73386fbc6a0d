"""All tunable values of nnunet-mtl in one typed config, with the presets users pick by name.

``default`` and ``resenc-m`` keep nnU-Net's own schedule (1000 epochs x 250 iterations) and use
nnU-Net's plans; ``tiny`` is the CPU preset: a reduced plan and a short schedule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

Pooling = Literal["avg", "foreground", "lesion"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Augmentation = Literal["nnunet", "mirror", "intensity"]
Readout = Literal["mlp", "lda"]
ReadoutFeatures = Literal["statistics", "all"]


@dataclass(frozen=True)
class HeadConfig:
    """Classification head on the shared encoder (model/head.py)."""

    # "avg": global average; "foreground" / "lesion": average weighted by the predicted probability of the
    # whole pancreas / of the lesion. Global averages of instance-normalised features barely differ between
    # cases, so the weighted forms carry far more subtype information (see README, "Classification head").
    pooling: Pooling = "lesion"
    # encoder stages pooled (0: full resolution; negative count from the bottleneck, -1; None: every stage).
    # Linear probes put the subtype in the shallow stages far more than in the bottleneck (README).
    stages: tuple[int, ...] | None = None
    # pooling weights: the predicted probability where it reaches this value, else 0
    weight_threshold: float = 0.5
    # a predicted lesion smaller than this share of the gland counts as none: the head pools the gland
    lesion_fallback_share: float = 0.005
    # During training, take the pooling weights from the reference mask instead of the prediction, so the
    # head sees the lesion before the decoder has learnt to find it (inference always uses the prediction).
    pool_on_truth_in_training: bool = True
    # Also feed the MLP intensity statistics of the input inside the predicted lesion and gland (mean, std,
    # contrast, relative size): the bottleneck alone learns subtype features too slowly for short schedules.
    intensity_statistics: bool = True
    # ... and of the lesion's core and rim (model/head.py, lesion_context_statistics), which a predicted
    # outline a voxel off barely moves: the mean over a small lesion mixes gland into it (README, "The readout
    # fitted on predict's path, and the lesion's core and rim").
    lesion_context_statistics: bool = True
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.3
    # What classifies the pooled features at inference. "mlp": the MLP trained with the network. "lda": after
    # training, a shrinkage LDA (equal priors) fitted on the features of the training split's cases as the
    # inference engine pools them, over the predicted masks, replaces it (training/readout.py); the MLP
    # still trains, and its gradient still reaches the encoder. Fitted on the pooling users get, not the
    # reference masks the MLP learnt on, and with a shrinkage covariance that a few dozen cases can estimate.
    readout: Readout = "lda"
    # the fit needs at least this many training cases of every subtype, else the MLP stays
    readout_min_cases_per_class: int = 2
    # The features the LDA readout may use, simplest first: "statistics" (the intensity statistics only) and
    # "all" (every pooled stage too). Each is fitted on the training split; the final validation keeps the
    # simplest unless a richer one classifies more validation cases right with one-sided confidence
    # readout_choice_confidence (the lesion threshold's rule). The network segments its training cases better
    # than unseen ones, and the learnt stages' features of training cases separate the subtypes more cleanly
    # than those of unseen cases do: fitted on all 251 features, the LDA trusts them too far (README, "The
    # readout's features, chosen on the validation split").
    readout_features: tuple[ReadoutFeatures, ...] = ("statistics", "all")
    readout_choice_confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.readout not in ("mlp", "lda"):
            raise ValueError(f"HeadConfig.readout must be 'mlp' or 'lda', got {self.readout!r}")
        if self.readout_min_cases_per_class < 2:  # one case per class leaves no within-class covariance
            raise ValueError(
                f"HeadConfig.readout_min_cases_per_class must be >= 2, got {self.readout_min_cases_per_class}"
            )
        features = self.readout_features
        if not features or len(set(features)) != len(features) or not set(features) <= {"statistics", "all"}:
            raise ValueError(
                f"HeadConfig.readout_features must be distinct entries of 'statistics' and 'all', got {features!r}"
            )
        if not 0.5 <= self.readout_choice_confidence < 1:
            raise ValueError(
                f"HeadConfig.readout_choice_confidence must be in [0.5, 1), got {self.readout_choice_confidence}"
            )


@dataclass(frozen=True)
class ScheduleConfig:
    num_epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50  # nnU-Net's random-patch validation loss
    initial_lr: float = 1e-2
    # SGD momentum of the shared network (nnU-Net's 0.99). Its time constant, 1 / (1 - momentum) steps,
    # is negligible in nnU-Net's 250,000 steps but a fifth of the tiny preset's 480.
    momentum: float = 0.99
    head_initial_lr: float = 1e-2  # the classification head's own rate (a full-rate head, see LossConfig)
    oversample_foreground_percent: float = 0.33  # nnU-Net's share of patches centred on foreground
    checkpoint_every: int = 1  # epochs between checkpoint_latest saves (a crash loses at most this many)
    # data-augmentation worker processes when training on a CPU. None: nnU-Net's own count
    # (get_allowed_n_proc_DA). 0: batches are made in the training process, between steps: the network's
    # threads use every core, so workers only take cores from it (README, "Batches made in the training process
    # on a CPU"). An nnUNet_n_proc_DA set in the environment wins. On CUDA nnU-Net's count always.
    cpu_data_loader_processes: int | None = None
    # "nnunet": nnU-Net's full pipeline; "mirror": random flips only; "intensity": flips and nnU-Net's
    # intensity transforms, without rotation and scaling (for short schedules, see training/augmentation.py)
    augmentation: Augmentation = "nnunet"
    # train for this many minutes (the epochs' own time, validations included): num_epochs is then an upper
    # bound, and the learning-rate decay and the last validation are sized to the epochs that fit, measured
    # as training goes. None: exactly num_epochs (nnU-Net's way).
    time_budget_minutes: float | None = None
    # "auto": nnU-Net's fp16 autocast on CUDA; on a CPU bf16 autocast where it has bf16 units (AVX-512 BF16,
    # AMX), else fp32 (precision.py)
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        if self.cpu_data_loader_processes is not None and self.cpu_data_loader_processes < 0:
            raise ValueError(
                f"ScheduleConfig.cpu_data_loader_processes must be None or >= 0, got {self.cpu_data_loader_processes}"
            )


@dataclass(frozen=True)
class LossConfig:
    phase1_epochs: int = 20  # phase 1: classification head on a detached bottleneck
    phase1_cls_weight: float = 0.01  # weight of the classification loss in the total loss, phase 1
    phase2_cls_weight: float = 0.1  # ... and in phase 2 (joint training)
    # The head's own parameters are not shared, so the weight need not slow them down: their gradient is
    # divided by the weight, and the weight only limits the classification gradient reaching the encoder.
    head_full_rate: bool = True
    head_momentum: float = 0.9  # SGD momentum of the head (nnU-Net's 0.99 makes a full-rate head unstable)
    class_weight_smoothing: float = 1.0  # class weight ~ 1 / (count + smoothing), from the training split
    grad_clip_norm: float = 12.0  # nnU-Net's value

    def phase(self, epoch: int) -> int:
        return 1 if epoch < self.phase1_epochs else 2

    def cls_weight(self, epoch: int) -> float:
        return self.phase1_cls_weight if self.phase(epoch) == 1 else self.phase2_cls_weight


@dataclass(frozen=True)
class SelectionConfig:
    """Whole-volume validation, checkpoint selection and early stopping."""

    validate_every: int = 10  # epochs between whole-volume validations of the validation split
    weight_whole: float = 0.25
    weight_lesion: float = 0.35
    weight_f1: float = 0.4
    patience: int = 200  # epochs without a better combined metric before training stops
    min_delta: float = 1e-4
    # selection and early stopping follow an exponential moving average of the combined metric, this being
    # the previous average's weight (nnU-Net smooths its pseudo Dice with 0.9): a small validation split's
    # metric jumps between validations. 0: the raw metric.
    smoothing: float = 0.0

    def combined(self, dice_whole: float, dice_lesion: float, macro_f1: float) -> float:
        total = self.weight_whole + self.weight_lesion + self.weight_f1
        return (self.weight_whole * dice_whole + self.weight_lesion * dice_lesion + self.weight_f1 * macro_f1) / total


@dataclass(frozen=True)
class CpuPlanConfig:
    """The CPU preset's plan, derived by nnU-Net's planner from the dataset fingerprint (training/cpu_plan.py)."""

    # nnU-Net's estimate of the network's feature maps for one batch of 2 (its planner's VRAM unit: 560e6 for
    # 8 GB). 1e7 is the 4-stage network of 16-128 features at a 32x48x48 patch: about 1 s per training step on
    # 2 CPU cores. The patch shrinks until the network fits it.
    feature_map_budget: float = 1.0e7
    base_features: int = 16
    max_features: int = 128
    # where the patch holds less than this share of the median case, the target spacing is coarsened as for
    # nnU-Net's 3d_lowres (the finer axes first) until it holds it; nnU-Net's own threshold is 0.25
    median_coverage: float = 1.0
    # the width is fitted to the machine (training/cpu_plan.py): the widest network, from base_features down to
    # min_base_features, whose timed forward-backward fits this many times in the schedule's time budget (the
    # trainer's whole step, data and optimizer included, measured about 1.5x the timed one on 2 AVX2 cores)
    min_base_features: int = 8
    min_training_steps: int = 1000


@dataclass(frozen=True)
class TrackingConfig:
    tensorboard: bool = True  # event files of both tasks' curves in <fold folder>/tensorboard/


@dataclass(frozen=True)
class InferenceConfig:
    memory_budget_gb: float = 6.0  # whole-volume forward if its estimated peak memory fits, else sliding window
    tile_step_size: float = 0.5  # sliding-window step, as a fraction of the patch (nnU-Net's default)
    # "auto": fp16 autocast on CUDA (as nnU-Net); on a CPU bf16 autocast where it has bf16 units, else fp32
    # (precision.py; `nnunet-mtl benchmark` reports both)
    precision: Precision = "auto"
    # At the end of training, choose predict's path and mirroring on the validation split
    # (training/inference_choice.py): the cheapest candidate whose mean Dice of each region is within
    # choice_dice_tolerance of stock nnU-Net's tiles and flips and which classifies at most
    # choice_subtype_cases fewer cases right. Measured (README, "Inference path"): which path keeps up with
    # stock's depends on the model, not on a constant.
    choose_on_validation: bool = True
    choice_dice_tolerance: float = 0.01
    choice_subtype_cases: int = 1


@dataclass(frozen=True)
class EvaluationConfig:
    """`nnunet-mtl evaluate`, `compare` and the report (evaluation/)."""

    # normalised surface distance tolerance: about one slice of the real data (2.0 mm) and within the
    # inter-rater boundary variation reported for pancreas CT (2-3 mm)
    nsd_tolerance_mm: float = 2.0
    hd_percentile: float = 95.0
    # a lesion counts as present (truth or prediction) from this volume: a sphere of 1.7 mm radius, below the
    # smallest lesion of interest (3 mm radius: 113 mm3) and above a few stray voxels (1.07 mm3 each at the
    # real data's median spacing)
    lesion_min_volume_mm3: float = 20.0
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    confidence_level: float = 0.95
    calibration_bins: int = 10  # equal-width confidence bins of the expected calibration error


@dataclass(frozen=True)
class PostprocessingConfig:
    """What is determined on the validation predictions and stored in the model folder (postprocessing/)."""

    # temperature scaling: the maximum a posteriori temperature under a normal prior on log T with this
    # standard deviation; it keeps T finite when every validation case is right (where plain maximum
    # likelihood sends T to 0) and is negligible against a few dozen cases
    log_temperature_prior_sd: float = 1.0
    # a temperature only softens (T >= 1): the validation split is also the one checkpoint_best was selected
    # on, so the network looks at least as sure and right there as it will on new cases, never less. Measured
    # (README, "Evaluation"): on a phantom whose 12 validation cases were all right, the unconstrained fit
    # gave T = 0.57, which raised the held-out ECE from 0.236 to 0.278 and the log loss from 3.77 to 4.79.
    min_temperature: float = 1.0
    # a mask step or lesion threshold is kept only where it raises the validation Dice by more than this
    # (nnU-Net: any gain)
    min_dice_gain: float = 0.0
    # the lesion region's probability thresholds tried on the validation split (postprocessing/
    # lesion_threshold.py); 0.5 is nnU-Net's. Measured (README, "The lesion threshold"): on a small-lesions
    # phantom model chosen 0.05 lifted the test lesion Dice by 0.054 [0.038, 0.070], paired on the same model.
    lesion_thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    # a threshold other than 0.5 is kept only where its per-case lesion Dice gain is positive with this one-sided
    # bootstrap confidence over the validation cases (EvaluationConfig's resamples and seed)
    lesion_threshold_confidence: float = 0.95


EVALUATION = EvaluationConfig()
POSTPROCESSING = PostprocessingConfig()


@dataclass(frozen=True)
class MultitaskConfig:
    num_subtypes: int = 3
    head: HeadConfig = field(default_factory=HeadConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cpu_plan: CpuPlanConfig = field(default_factory=CpuPlanConfig)  # used by presets with the CPU plan

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> MultitaskConfig:
        """The inverse of :meth:`to_dict` (as stored in checkpoints); unknown keys are an error."""
        head = dict(values.get("head", {}))
        # checkpoints written before the core and rim statistics existed have heads without them
        head.setdefault("lesion_context_statistics", False)
        for key in ("hidden", "stages", "readout_features"):
            if head.get(key) is not None:
                head[key] = tuple(head[key])
        return cls(
            num_subtypes=values.get("num_subtypes", 3),
            head=HeadConfig(**head),
            schedule=ScheduleConfig(**values.get("schedule", {})),
            loss=LossConfig(**values.get("loss", {})),
            selection=SelectionConfig(**values.get("selection", {})),
            inference=InferenceConfig(**values.get("inference", {})),
            tracking=TrackingConfig(**values.get("tracking", {})),
            cpu_plan=CpuPlanConfig(**values.get("cpu_plan", {})),
        )


DEFAULT = MultitaskConfig()
# A few hundred steps in a time budget: momentum 0.95 instead of 0.99 (a 20-step rather than 100-step
# memory) at the same effective step (lr / (1 - momentum) = 1), flips as the only augmentation (README,
# "Measured"), and the plan nnU-Net's planner derives for a CPU budget (cpu_plan).
TINY = MultitaskConfig(
    schedule=ScheduleConfig(
        num_epochs=200,
        iterations_per_epoch=12,
        val_iterations_per_epoch=1,
        initial_lr=0.05,
        momentum=0.95,
        oversample_foreground_percent=1.0,
        augmentation="mirror",
        time_budget_minutes=7.5,
        cpu_data_loader_processes=0,
    ),
    loss=replace(LossConfig(), phase1_epochs=4),
    # within a time budget training always uses all of it: no early stopping on a noisy 12-case metric
    selection=replace(SelectionConfig(), validate_every=4, patience=10**6, smoothing=0.5),
)


@dataclass(frozen=True)
class Preset:
    name: str
    plans_identifier: str
    planner: str  # nnU-Net's planner class, or "cpu": nnU-Net's planner under config.cpu_plan's budget
    trainer: str
    config: MultitaskConfig


PRESETS = {
    "tiny": Preset("tiny", "nnUNetMTLTinyPlans", "cpu", "nnUNetTrainerMultitaskTiny", TINY),
    "default": Preset("default", "nnUNetPlans", "ExperimentPlanner", "nnUNetTrainerMultitask", DEFAULT),
    "resenc-m": Preset("resenc-m", "nnUNetResEncUNetMPlans", "nnUNetPlannerResEncM", "nnUNetTrainerMultitask", DEFAULT),
}


@dataclass(frozen=True)
class Targets:
    """The task's whole-volume targets, and what the seed system and its peers reached on the real
    validation set (honest whole-volume numbers; shown beside ours in the report)."""

    dice_whole: float = 0.91
    dice_lesion: float = 0.31
    macro_f1: float = 0.70
    peers_dice_whole: tuple[float, float] = (0.92, 0.94)
    peers_dice_lesion: tuple[float, float] = (0.57, 0.67)
    peers_macro_f1: tuple[float, float] = (0.63, 0.72)


TARGETS = Targets()


@dataclass(frozen=True)
class ViewerConfig:
    """The report's case viewer: what it embeds of each case's CT and masks, and how much in all."""

    # base64 of all embedded cases' volumes (CT and both masks); the worst and the best case are always in,
    # then the next worst and next best by turns while the next fits. A real-size case (64x119x179 voxels)
    # takes about 1.3 MB, so the real validation set's 36 cases fit (benchmarks/report_viewer.py)
    budget_mb: float = 50.0
    # CT stored as uint8 over this HU range (2.4 HU a step): the abdominal window W400/L40 with room to widen
    ct_range_hu: tuple[float, float] = (-260.0, 340.0)
    # above this, every nth row and column is kept (in-plane; slices all kept) so one case stays small
    max_voxels_per_case: int = 4_000_000


VIEWER = ViewerConfig()
