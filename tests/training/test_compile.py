"""The multitask trainer under ``torch.compile``, as nnU-Net compiles it on CUDA (its ``_do_i_compile``).

nnU-Net turns compiling off on a CPU, so these tests turn it on and compile with a CPU backend
(``aot_eager``: Dynamo's graph capture and AOT autograd, without generating kernels), which is what
can break with our network: its keyword arguments, the head's pooling and the deep-supervision switch.
"""

import functools

import pytest
import torch
from torch._dynamo import OptimizedModule

from tests.training.ext_trainers.smoke_trainers import nnUNetTrainerMultitaskScratch
from tests.training.test_trainer import make_trainer


@pytest.fixture
def compiled_trainer(planned_dataset, nnunet_root, monkeypatch):
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    trainer = make_trainer(nnunet_root, planned_dataset, nnUNetTrainerMultitaskScratch)
    monkeypatch.setattr(trainer, "_do_i_compile", lambda: True)
    trainer.on_train_start()
    yield trainer, next(trainer.dataloader_train)
    trainer.on_train_end()
    torch._dynamo.reset()


@pytest.mark.slow
def test_compiled_network_trains_both_phases_and_keeps_the_gradient_isolation(compiled_trainer):
    trainer, batch = compiled_trainer
    assert isinstance(trainer.network, OptimizedModule)
    segmentation_loss = trainer.loss
    trainer.loss = lambda output, target: output[0].sum() * 0  # only the classification loss
    encoder = list(trainer.multitask_network.unet.encoder.parameters())
    for epoch, reaches_encoder in ((0, False), (trainer.mtl_config.loss.phase1_epochs, True)):
        trainer.current_epoch = epoch
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.train_step(batch)
        grad = sum(float(p.grad.abs().sum()) for p in encoder if p.grad is not None)
        assert (grad > 0) == reaches_encoder, f"phase {trainer.phase()}"
    trainer.loss = segmentation_loss
    losses = [trainer.train_step(batch)["loss"] for _ in range(3)]
    assert all(torch.isfinite(torch.as_tensor(v)) for v in losses)


@pytest.mark.slow
def test_compiled_network_equals_the_eager_one_with_and_without_deep_supervision(compiled_trainer):
    trainer, batch = compiled_trainer
    trainer.network.eval()
    x = batch["data"][:1]
    with torch.no_grad():
        for deep_supervision in (True, False):
            trainer.set_deep_supervision_enabled(deep_supervision)
            compiled, eager = trainer.network(x), trainer.multitask_network(x)
            assert isinstance(compiled.segmentation, list) == deep_supervision
            first = (lambda s: s[0]) if deep_supervision else (lambda s: s)
            torch.testing.assert_close(first(compiled.segmentation), first(eager.segmentation))
            torch.testing.assert_close(compiled.class_logits, eager.class_logits)


@pytest.mark.slow
def test_whole_volume_validation_runs_beside_a_compiled_network(compiled_trainer):
    trainer, _ = compiled_trainer
    trainer.network.eval()
    with torch.no_grad():
        metrics = trainer.whole_volume_validation()
    assert len(metrics.cases) == len(trainer.do_split()[1]) and 0 <= metrics.dice_whole <= 1
    assert trainer.multitask_network.decoder.deep_supervision  # switched back on for training
