"""``nnUNetTrainerMultitask``: nnU-Net's trainer with a subtype head on the shared encoder.

Usable through ``nnunet-mtl train`` and through stock nnU-Net::

    export nnUNet_extTrainer=$(nnunet-mtl trainer-path)
    nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainerMultitask [--val_best]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from time import time

import numpy as np
import torch
from nnunetv2.training.loss.dice import get_tp_fp_fn_tn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from nnunet_mtl.config import DEFAULT, TINY, MultitaskConfig
from nnunet_mtl.data.prepare import SUBTYPES_FILE
from nnunet_mtl.environment import environment_variable
from nnunet_mtl.inference.choice import UNDETERMINED, InferenceChoice, remove_inference_choice, write_inference_choice
from nnunet_mtl.inference.engine import InferenceEngine, free_cached_memory
from nnunet_mtl.io import remove_stale_temp_files, write_text_atomic
from nnunet_mtl.model.checkpoint import (
    CHECKPOINT_FILES,
    MultitaskState,
    load_resume_checkpoint,
    save_checkpoint,
    training_checkpoint,
    update_network_weights,
)
from nnunet_mtl.model.multitask import MultitaskUNet, build_multitask_network, reference_structure_maps
from nnunet_mtl.precision import resolve_precision
from nnunet_mtl.training.augmentation import initial_patch_size, training_transforms
from nnunet_mtl.training.distributed import (
    barrier,
    broadcast_from_rank0,
    end_rank_on_error,
    gather_objects,
    inverse_frequency_weights,
    rank_sampling,
)
from nnunet_mtl.training.inference_choice import choose_inference, format_choice
from nnunet_mtl.training.optimizer import build_optimizer
from nnunet_mtl.training.postprocess import determine_for_model, format_postprocessing
from nnunet_mtl.training.progress import NAN, MultitaskLocalLogger
from nnunet_mtl.training.readout import FittedReadout, choose_readout, fit_readouts, format_readout, readout_problem
from nnunet_mtl.training.selection import CheckpointSelection, epochs_within_budget
from nnunet_mtl.training.step import multitask_losses, optimise
from nnunet_mtl.training.subtypes import SubtypeMap
from nnunet_mtl.training.tracking import TensorBoardLogger
from nnunet_mtl.training.validation import (
    ValidatedCase,
    ValidationMetrics,
    preprocessed_case,
    reclassified,
    validate_all_ranks,
    validate_cases,
    write_validation_outputs,
)

DATA_LOADER_PROCESSES_VARIABLE = "nnUNet_n_proc_DA"


class nnUNetTrainerMultitask(nnUNetTrainer):
    mtl_config: MultitaskConfig = DEFAULT

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        schedule = self.mtl_config.schedule
        self.num_epochs = schedule.num_epochs
        self.num_iterations_per_epoch = schedule.iterations_per_epoch
        self.num_val_iterations_per_epoch = schedule.val_iterations_per_epoch
        self.initial_lr = schedule.initial_lr
        self.oversample_foreground_percent = schedule.oversample_foreground_percent
        self.save_every = schedule.checkpoint_every
        self.logger.local_logger = MultitaskLocalLogger()
        self.tensorboard = None
        if self.local_rank == 0 and self.mtl_config.tracking.tensorboard:
            self.tensorboard = TensorBoardLogger(self.output_folder)
            self.logger.loggers.append(self.tensorboard)
        self.class_weights: torch.Tensor | None = None
        self.selection = CheckpointSelection(self.mtl_config.selection, self.num_epochs)
        self.precision = resolve_precision(schedule.precision, self.device)
        self._subtypes: SubtypeMap | None = None
        self._validation_keys: list[str] | None = None
        self._resumed_at_epoch = 0
        self._loaded_checkpoint: Path | None = None  # the checkpoint file last loaded

    # ------------------------------------------------------------------ network

    @classmethod
    def build_network_architecture(
        cls,
        plans_manager,
        configuration_manager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> MultitaskUNet:
        return build_multitask_network(
            configuration_manager, num_input_channels, num_output_channels, cls.mtl_config, enable_deep_supervision
        )

    def initialize(self):
        super().initialize()
        self.multitask_network.has_regions = self.label_manager.has_regions

    def _set_batch_size_and_oversample(self):
        """nnU-Net's split of the plan's batch over DDP ranks; every rank draws foreground patches with the
        global batch's share (training/distributed.py: nnU-Net gives rank 0 none with batch 2 on 2 GPUs)."""
        if not self.is_ddp:
            return super()._set_batch_size_and_oversample()
        import torch.distributed as dist

        sampling = rank_sampling(
            self.configuration_manager.batch_size,
            dist.get_world_size(),
            dist.get_rank(),
            self.oversample_foreground_percent,
        )
        self.batch_size = sampling.batch_size
        self.oversample_foreground_percent = sampling.oversample_foreground_percent
        self.probabilistic_oversampling = sampling.probabilistic
        print(
            f"rank {dist.get_rank()}: batch {sampling.batch_size}, foreground share "
            f"{sampling.oversample_foreground_percent:.3g}{' per patch' if sampling.probabilistic else ''}",
            flush=True,
        )

    @property
    def multitask_network(self) -> MultitaskUNet:
        network = self.network.module if isinstance(self.network, DistributedDataParallel) else self.network
        return network._orig_mod if isinstance(network, OptimizedModule) else network

    def configure_optimizers(self):
        """nnU-Net's SGD and poly schedule; the head is its own parameter group (rate and momentum)."""
        return build_optimizer(
            self.network, self.multitask_network.head, self.mtl_config, self.weight_decay, self.num_epochs
        )

    # ------------------------------------------------------------------ augmentation

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        augmentation = self.mtl_config.schedule.augmentation
        initial = initial_patch_size(augmentation, initial, self.configuration_manager.patch_size)
        return rotation, dummy_2d, initial, mirror_axes

    def get_dataloaders(self):
        """nnU-Net's loaders, with ``cpu_data_loader_processes`` workers on a CPU (an ``nnUNet_n_proc_DA`` set
        in the environment wins)."""
        processes = self.mtl_config.schedule.cpu_data_loader_processes
        if self.device.type != "cpu" or processes is None or DATA_LOADER_PROCESSES_VARIABLE in os.environ:
            return super().get_dataloaders()
        with environment_variable(DATA_LOADER_PROCESSES_VARIABLE, str(processes)):
            return super().get_dataloaders()

    def get_training_transforms(self, *args, **kwargs):
        """nnU-Net's arguments; the pipeline of the configured augmentation."""
        return training_transforms(self.mtl_config.schedule.augmentation, *args, **kwargs)

    # ------------------------------------------------------------------ subtypes and phases

    @property
    def subtypes(self) -> SubtypeMap:
        if self._subtypes is None:
            from nnunetv2.paths import nnUNet_raw

            folders = [Path(self.preprocessed_dataset_folder_base)]
            if nnUNet_raw.is_set():
                folders.append(Path(nnUNet_raw.get()) / self.plans_manager.dataset_name)
            self._subtypes = SubtypeMap.load(*folders)
        return self._subtypes

    def subtype_targets(self, keys) -> torch.Tensor:
        return self.subtypes.targets(keys)

    def phase(self, epoch: int | None = None) -> int:
        return self.mtl_config.loss.phase(self.current_epoch if epoch is None else epoch)

    def cls_weight(self) -> float:
        return self.mtl_config.loss.cls_weight(self.current_epoch)

    def compute_class_weights(self) -> torch.Tensor:
        train_keys, _ = self.do_split()
        targets = self.subtype_targets(train_keys)
        counts = torch.bincount(targets, minlength=self.mtl_config.num_subtypes).tolist()
        weights = inverse_frequency_weights(counts, self.mtl_config.loss.class_weight_smoothing)
        self.print_to_log_file(
            f"subtype counts in the training split {counts} -> class weights {[round(w, 4) for w in weights.tolist()]}"
        )
        return weights

    # ------------------------------------------------------------------ training loop

    def check_split_subtypes(self) -> None:
        """Every case of this fold's training and validation splits has a subtype (on every rank, before the
        first epoch: a validation case found missing at the first validation would stop one rank only)."""
        train_keys, val_keys = self.do_split()
        self.subtypes.require(train_keys, f"the training split of fold {self.fold}")
        self.subtypes.require(val_keys, f"the validation split of fold {self.fold}")

    def on_train_start(self):
        self.check_split_subtypes()
        super().on_train_start()
        if self.class_weights is None:  # restored by load_checkpoint when continuing
            self.class_weights = self.compute_class_weights()
        self.multitask_network.head.set_readout(None)  # fitted again for this run's weights at its end
        self._loaded_checkpoint = None  # a resumed checkpoint_latest is gone by the final validation
        if self.local_rank == 0:
            remove_stale_temp_files(Path(self.output_folder))
            remove_inference_choice(Path(self.output_folder))  # made again by this run's final validation
            subtypes_copy = Path(self.output_folder_base) / SUBTYPES_FILE
            write_text_atomic(subtypes_copy, self.subtypes.to_json())

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.logger.log("phase", self.phase(), self.current_epoch)
        if self.current_epoch == self.mtl_config.loss.phase1_epochs:
            self.print_to_log_file("phase 2: joint training, classification loss reaches the encoder")

    def _step(self, batch: dict, train: bool) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = (
            [t.to(self.device, non_blocking=True) for t in target]
            if isinstance(target, list)
            else target.to(self.device, non_blocking=True)
        )
        subtype = self.subtype_targets(batch["keys"]).to(self.device)
        maps = self.reference_maps(target) if train else None
        losses = multitask_losses(
            self.network,
            self.loss,
            data,
            target,
            subtype,
            self.class_weights,
            self.cls_weight(),
            self.precision,
            detach_head_input=train and self.phase() == 1,
            reference_maps=maps,
        )
        return {**losses._asdict(), "target": target}

    def reference_maps(self, target) -> torch.Tensor | None:
        """Whole-pancreas and lesion maps (batch, 2, *spatial) from the reference mask, if so configured."""
        head = self.mtl_config.head
        if not head.pool_on_truth_in_training or (head.pooling == "avg" and not head.intensity_statistics):
            return None
        full_resolution = target[0] if isinstance(target, list) else target
        return reference_structure_maps(
            full_resolution, self.label_manager.has_regions, self.label_manager.num_segmentation_heads
        )

    def train_step(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        step = self._step(batch, train=True)
        divisor = self.cls_weight() if self.mtl_config.loss.head_full_rate else None
        optimise(
            step["total"],
            self.network,
            self.multitask_network.head,
            self.optimizer,
            self.grad_scaler,
            self.mtl_config.loss.grad_clip_norm,
            divisor,
        )
        return {
            "loss": step["total"].detach().float().cpu().numpy(),
            "seg_loss": step["seg_loss"].detach().float().cpu().numpy(),
            "cls_loss": step["cls_loss"].detach().float().cpu().numpy(),
        }

    def _log_mean(self, key: str, values) -> None:
        self.logger.log(key, float(np.mean(gather_objects([float(v) for v in values]))), self.current_epoch)

    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(train_outputs)
        self._log_mean("train_seg_losses", [o["seg_loss"] for o in train_outputs])
        self._log_mean("train_cls_losses", [o["cls_loss"] for o in train_outputs])

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's random-patch validation (loss and pseudo Dice) plus the patches' classification loss."""
        step = self._step(batch, train=False)
        output = step["output"].segmentation
        target = step["target"]
        if self.enable_deep_supervision:
            output, target = output[0], target[0]
        axes = [0, *range(2, output.ndim)]
        if self.label_manager.has_regions:
            predicted = (torch.sigmoid(output) > 0.5).long()
        else:
            predicted = torch.zeros_like(output).scatter_(1, output.argmax(1, keepdim=True), 1)
            target = torch.zeros_like(output).scatter_(1, target.long(), 1)
        tp, fp, fn, _ = get_tp_fp_fn_tn(predicted, target, axes=axes)
        start = 0 if self.label_manager.has_regions else 1
        return {
            "loss": step["seg_loss"].detach().float().cpu().numpy(),
            "cls_loss": step["cls_loss"].detach().float().cpu().numpy(),
            "tp_hard": tp.detach().cpu().numpy()[start:],
            "fp_hard": fp.detach().cpu().numpy()[start:],
            "fn_hard": fn.detach().cpu().numpy()[start:],
        }

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        super().on_validation_epoch_end(val_outputs)
        self._log_mean("val_cls_losses", [o["cls_loss"] for o in val_outputs])

    # ------------------------------------------------------------------ whole-volume validation

    def rank_validation_keys(self) -> list[str]:
        """This rank's share of the validation cases (all of them without DDP)."""
        if self._validation_keys is None:
            self._validation_keys = self.do_split()[1]
        return self.rank_share(self._validation_keys)

    def rank_share(self, keys: list[str]) -> list[str]:
        """This rank's share of ``keys`` (all of them without DDP)."""
        if not self.is_ddp:
            return list(keys)
        import torch.distributed as dist

        return keys[self.local_rank :: dist.get_world_size()]

    @contextmanager
    def inference_engine(self, choice: InferenceChoice = UNDETERMINED) -> Iterator[InferenceEngine]:
        """``predict``'s engine on this network with ``choice``'s path and mirroring (deep supervision off)."""
        was_ds = self.multitask_network.decoder.deep_supervision
        self.set_deep_supervision_enabled(False)
        engine = InferenceEngine(
            [self.multitask_network],
            self.configuration_manager,
            self.device,
            self.mtl_config.inference,
            (self.inference_allowed_mirroring_axes or ()) if choice.mirroring else None,
            choice.path,
            warn=self.print_to_log_file,
        )
        free_cached_memory(self.device)  # the training step's cached blocks: the whole-volume passes need them
        try:
            yield engine
        finally:
            self.set_deep_supervision_enabled(was_ds)
            free_cached_memory(self.device)

    def whole_volume_validation(
        self,
        export_folder: Path | None = None,
        save_probabilities: bool = False,
        choice: InferenceChoice = UNDETERMINED,
    ) -> ValidationMetrics:
        """Every validation case through ``predict``'s engine with ``choice``'s path and mirroring."""
        val_keys = self.rank_validation_keys()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        with self.inference_engine(choice) as engine:
            local = validate_cases(
                engine,
                dataset,
                val_keys,
                self.subtypes,
                self.plans_manager,
                self.configuration_manager,
                self.label_manager,
                Path(self.preprocessed_dataset_folder_base) / "gt_segmentations",
                export_folder,
                save_probabilities,
            )
        return validate_all_ranks(local, self.mtl_config)

    def fit_subtype_readouts(self, choice: InferenceChoice = UNDETERMINED) -> list[FittedReadout]:
        """With ``HeadConfig.readout = "lda"``: the head's features of every training case, pooled by
        ``predict``'s engine over the predicted masks on ``choice``'s path and mirroring, and a shrinkage LDA on
        them for each of ``HeadConfig.readout_features`` the head has, simplest first (training/readout.py).
        The readout must be fitted on the path it will classify: the features of mirrored or tiled passes are
        not those of one pass (README, "The readout fitted on predict's path"). Each rank featurises its share;
        rank 0 fits on all of them and every rank gets the same readouts. Empty (and the reason logged) where
        none can be fitted."""
        head = self.multitask_network.head
        head.set_readout(None)
        config = self.mtl_config
        if config.head.readout != "lda":
            return []
        keys = self.do_split()[0]
        problem = readout_problem(
            [self.subtypes[k] for k in keys], config.num_subtypes, config.head.readout_min_cases_per_class
        )
        if problem is not None:
            self.print_to_log_file(format_readout(None, problem), also_print_to_console=True)
            return []
        rank_keys = self.rank_share(keys)
        dataset = self.dataset_class(self.preprocessed_dataset_folder, rank_keys)
        self.network.eval()
        local = []
        with torch.no_grad(), self.inference_engine(choice) as engine:
            for key in rank_keys:
                features = engine.forward(preprocessed_case(dataset, key)[0]).head_features
                local.append((key, features.numpy()))
        cases = sorted(gather_objects(local), key=lambda case: case[0])
        fitted, problem = [], None
        if self.local_rank == 0:  # fitted once, sent to every rank: all ranks deploy the very same readout
            features = np.stack([f for _, f in cases])
            try:
                if not np.isfinite(features).all():
                    raise ValueError("non-finite head features")
                num_statistics = head.num_features - sum(head.stage_channels)
                subtypes = [self.subtypes[k] for k, _ in cases]
                candidates = config.head.readout_features
                fitted = fit_readouts(features, subtypes, config.num_subtypes, candidates, num_statistics)
            except (ValueError, np.linalg.LinAlgError) as err:  # a diverged network: keep the MLP, keep training's end
                problem = f"the fit failed: {err}"
        fitted, problem = broadcast_from_rank0((fitted, problem))
        if not fitted:
            self.print_to_log_file(format_readout(None, problem), also_print_to_console=True)
        return fitted

    def install_readout(self, fitted: FittedReadout | None, choice: InferenceChoice, log: bool = True) -> None:
        """Make ``fitted`` the head's readout (None: the MLP)."""
        head = self.multitask_network.head
        if fitted is None:
            head.set_readout(None)
            return
        head.set_readout(torch.from_numpy(fitted.weight), torch.from_numpy(fitted.bias))
        if log:
            self.print_to_log_file(format_readout(fitted, path=choice.name), also_print_to_console=True)

    def fit_subtype_readout(self, choice: InferenceChoice = UNDETERMINED) -> bool:
        """Fit the readouts on ``choice``'s path and install the simplest: without validation cases to choose
        on (checkpoint_final at training's end, or no inference choice). True where one was fitted."""
        fitted = self.fit_subtype_readouts(choice)
        self.install_readout(fitted[0] if fitted else None, choice)
        return bool(fitted)

    def validate_with_chosen_readout(self, choice: InferenceChoice) -> list[ValidatedCase]:
        """The validation cases on ``choice``'s path, classified by the readout ``choose_readout`` keeps of
        those fitted on that path, which is installed."""
        fitted = self.fit_subtype_readouts(choice)
        self.install_readout(fitted[0] if fitted else None, choice, log=len(fitted) == 1)
        cases = self.whole_volume_validation(choice=choice).cases
        if len(fitted) < 2:
            return cases
        features = np.stack([c.head_features for c in cases])
        chosen = choose_readout(
            fitted, features, [c.subtype_true for c in cases], self.mtl_config.head.readout_choice_confidence
        )
        self.install_readout(chosen, choice)
        head = self.multitask_network.head
        with torch.no_grad():
            logits = head.readout(torch.from_numpy(features).float())  # the engine's own arithmetic
        return reclassified(cases, logits)

    def readout_weights(self) -> dict[str, torch.Tensor]:
        """The head's readout entries of the network's state dict."""
        return {k: v for k, v in self.multitask_network.state_dict().items() if ".readout_" in k}

    def on_train_end(self):
        self.fit_subtype_readout()  # before nnU-Net's on_train_end saves checkpoint_final
        super().on_train_end()
        barrier()  # rank 0's checkpoint_final (and best) are written before any rank loads one for validation
        if self.tensorboard is not None:
            self.tensorboard.close()

    def epochs_without_improvement(self) -> int:
        return self.selection.epochs_without_improvement(self.current_epoch)

    def on_epoch_end(self):
        epoch = self.current_epoch
        log = self.logger
        log.log("epoch_end_timestamps", time(), epoch)
        self.print_to_log_file(
            "train_loss",
            np.round(log.get_value("train_losses", step=-1), 4),
            "(segmentation",
            np.round(log.get_value("train_seg_losses", step=-1), 4),
            "classification",
            np.round(log.get_value("train_cls_losses", step=-1), 4),
            ")",
        )
        self.print_to_log_file(
            "val_loss",
            np.round(log.get_value("val_losses", step=-1), 4),
            "Pseudo dice",
            [np.round(i, 4) for i in log.get_value("dice_per_class_or_region", -1)],
        )

        metrics = None
        values = (NAN, NAN, NAN, NAN)
        if self.selection.should_validate(epoch):
            self.network.eval()
            with torch.no_grad():
                metrics = self.whole_volume_validation()
            values = (metrics.dice_whole, metrics.dice_lesion, metrics.macro_f1, metrics.combined)
            self.print_to_log_file(
                f"whole-volume validation ({len(metrics.cases)} cases): Dice whole {values[0]:.4f}, "
                f"lesion {values[1]:.4f}, subtype macro F1 {values[2]:.4f}, combined {values[3]:.4f}"
            )
        for key, value in zip(("wv_dice_whole", "wv_dice_lesion", "wv_macro_f1", "wv_combined"), values):
            log.log(key, value, epoch)
        # saved after this epoch's metrics are logged: a run resumed from checkpoint_best finds the epoch complete
        if metrics is not None and self.selection.update(epoch, metrics.combined):
            smoothed = "" if self.mtl_config.selection.smoothing == 0 else " (moving average)"
            self.print_to_log_file(
                f"new best combined metric {self.selection.best_metric:.4f}{smoothed}: saving checkpoint_best"
            )
            self.save_checkpoint(os.path.join(self.output_folder, CHECKPOINT_FILES["best"]))
        duration = log.get_value("epoch_end_timestamps", -1) - log.get_value("epoch_start_timestamps", -1)
        self.print_to_log_file(f"Epoch time: {duration:.2f} s")
        if self.mtl_config.schedule.time_budget_minutes is not None:
            self._fit_schedule_to_budget(validated=metrics is not None)
        if (epoch + 1) % self.save_every == 0 and epoch != self.num_epochs - 1:
            self.save_checkpoint(os.path.join(self.output_folder, CHECKPOINT_FILES["latest"]))
        if self.local_rank == 0 and self.selection.should_validate(epoch):  # plotting every epoch costs ~1 s on a CPU
            log.plot_progress_png(self.output_folder)
        self.current_epoch += 1

    def training_seconds(self) -> float:
        """Wall time of training so far: from the first epoch's start, without the time between an interrupted
        run's last completed epoch and the first epoch after ``--continue``."""
        starts = self.logger.get_value("epoch_start_timestamps", None)
        ends = self.logger.get_value("epoch_end_timestamps", None)
        resumed = self._resumed_at_epoch
        if not resumed:
            return time() - starts[0]
        return (ends[resumed - 1] - starts[0]) + (time() - starts[resumed])

    def _fit_schedule_to_budget(self, validated: bool) -> None:
        """Size num_epochs (and with it the poly decay and the last validation) to the time budget, from the
        training's wall time so far."""
        schedule = self.mtl_config.schedule
        budget = schedule.time_budget_minutes * 60
        done = self.current_epoch + 1
        # this epoch's checkpoint and plot come after this call: the next call's elapsed time holds them
        epochs = epochs_within_budget(self.training_seconds(), done, budget, schedule.num_epochs, validated)
        epochs = broadcast_from_rank0(epochs)  # ranks' clocks differ: all must train the same epochs
        if epochs != self.num_epochs:
            if abs(epochs - self.num_epochs) > 1 or self.current_epoch < 2:
                self.print_to_log_file(f"time budget {schedule.time_budget_minutes:g} min: {epochs} epochs")
            self.num_epochs = self.selection.num_epochs = self.lr_scheduler.max_steps = epochs

    def run_training(self):
        with end_rank_on_error():
            self._run_training()

    def _run_training(self):
        self.on_train_start()
        self._resumed_at_epoch = self.current_epoch  # > 0 after --continue
        while self.current_epoch < self.num_epochs:
            if self.selection.should_stop(self.current_epoch):
                self.print_to_log_file(
                    f"early stopping: no better combined metric for {self.epochs_without_improvement()} epochs "
                    f"(patience {self.mtl_config.selection.patience}); best {self.selection.best_metric} at epoch "
                    f"{self.selection.best_epoch}"
                )
                break
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [
                    self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)
                ]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        """Final validation: masks in the original geometry (and with ``save_probabilities``, nnU-Net's
        ``--npz``, the probabilities there), subtype CSVs and nnunet-mtl's metrics."""
        with end_rank_on_error():
            self._perform_actual_validation(save_probabilities)

    def choose_inference(self) -> InferenceChoice:
        """``predict``'s path and mirroring, chosen on this fold's validation split (training/inference_choice.py)
        and written to the fold folder; where the config turns this off, none (one pass, no mirroring). Installs
        the subtype readout fitted on the path chosen."""
        fold_dir = Path(self.output_folder)
        if not self.mtl_config.inference.choose_on_validation:
            if self.local_rank == 0:
                remove_inference_choice(fold_dir)  # an earlier run's choice is not this model's
            self.validate_with_chosen_readout(UNDETERMINED)
            return UNDETERMINED
        self.network.eval()
        readouts = {}

        def validate(candidate: InferenceChoice):
            # each candidate is scored with a readout fitted on its own path, as predict would deploy it
            cases = self.validate_with_chosen_readout(candidate)
            readouts[candidate] = {name: value.clone() for name, value in self.readout_weights().items()}
            return cases

        with torch.no_grad():
            choice = choose_inference(
                validate,
                self.mtl_config.inference,
                bool(self.inference_allowed_mirroring_axes),
                f"fold {self.fold}",
            )
        self.multitask_network.load_state_dict(readouts[choice], strict=False)  # the chosen path's readout
        if self.local_rank == 0:
            write_inference_choice(fold_dir, choice)
            self.print_to_log_file(format_choice(choice), also_print_to_console=True)
        return choice

    def _perform_actual_validation(self, save_probabilities: bool) -> None:
        folder = Path(self.output_folder) / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        choice = self.choose_inference()
        if self.local_rank == 0 and self._loaded_checkpoint is not None:  # predict reads the file
            update_network_weights(self._loaded_checkpoint, self.readout_weights())
        self.network.eval()
        with torch.no_grad():
            metrics = self.whole_volume_validation(folder, save_probabilities, choice)
        if self.local_rank != 0:
            return
        gt = Path(self.preprocessed_dataset_folder_base) / "gt_segmentations"
        evaluation = write_validation_outputs(metrics, folder, gt)
        regions, classification = evaluation.regions, evaluation.classification
        self.print_to_log_file(
            "final validation (whole volume, original geometry): Dice whole "
            f"{regions['whole_pancreas'].mean_dice or 0:.4f}, lesion {regions['lesion'].mean_dice or 0:.4f}, "
            f"macro F1 {classification.macro_f1 if classification else float('nan'):.4f}",
            also_print_to_console=True,
        )
        if classification is not None:
            postprocessing, path = determine_for_model(Path(self.output_folder).parent, gt_folder=gt)
            self.print_to_log_file(format_postprocessing(postprocessing), also_print_to_console=True)
            self.print_to_log_file(f"wrote {path}", also_print_to_console=False)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus the multitask state (model/checkpoint.py), written atomically."""
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        state = MultitaskState(
            config=self.mtl_config.to_dict(),
            class_weights=None if self.class_weights is None else self.class_weights.tolist(),
            best_metric=self.selection.best_metric,
            best_epoch=self.selection.best_epoch,
            smoothed_metric=self.selection.smoothed,
            dataset_name=self.plans_manager.dataset_name,
            labels=self.dataset_json["labels"],
        )
        checkpoint = training_checkpoint(
            network_weights=self.multitask_network.state_dict(),
            optimizer_state=self.optimizer.state_dict(),
            grad_scaler_state=self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            logging=self.logger.get_checkpoint(),
            current_epoch=self.current_epoch + 1,
            init_args=self.my_init_kwargs,
            trainer_name=self.__class__.__name__,
            mirror_axes=self.inference_allowed_mirroring_axes,
            multitask=state,
        )
        save_checkpoint(checkpoint, Path(filename))

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """nnU-Net's ``--c`` names checkpoint_latest; the newer checkpoint_best is taken where one exists."""
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        self._loaded_checkpoint = None
        if isinstance(checkpoint, str):
            requested = Path(checkpoint)
            checkpoint, path = load_resume_checkpoint(requested, self.device)
            if path != requested:
                self.print_to_log_file(f"{path.name} is newer than {requested.name}: resuming from it")
            self._loaded_checkpoint = path  # the final validation's readout is written back to it
        self.multitask_network.load_state_dict(checkpoint["network_weights"])
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        mirroring = checkpoint.get("inference_allowed_mirroring_axes")
        self.inference_allowed_mirroring_axes = tuple(mirroring) if mirroring is not None else None
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
        state = MultitaskState.of(checkpoint)
        weights = state.class_weights
        self.class_weights = None if weights is None else torch.tensor(weights, dtype=torch.float32)
        self.selection.best_metric, self.selection.best_epoch = state.best_metric, state.best_epoch
        self.selection.smoothed = state.smoothed_metric


class nnUNetTrainerMultitaskTiny(nnUNetTrainerMultitask):
    """The CPU preset's schedule (use with the ``nnUNetMTLTinyPlans`` plans)."""

    mtl_config = TINY


class nnUNetTrainerMultitaskFgPool(nnUNetTrainerMultitask):
    """Default schedule; the head pools weighted by the predicted whole pancreas instead of the lesion."""

    mtl_config = replace(DEFAULT, head=replace(DEFAULT.head, pooling="foreground"))


class nnUNetTrainerMultitaskAvgPool(nnUNetTrainerMultitask):
    """Default schedule; the head uses plain global average pooling."""

    mtl_config = replace(DEFAULT, head=replace(DEFAULT.head, pooling="avg"))
