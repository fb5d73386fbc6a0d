"""Re-exports nnunet-mtl's trainers for nnU-Net's ``nnUNet_extTrainer`` lookup.

nnU-Net imports the modules of each ``nnUNet_extTrainer`` folder as top-level modules; importing the
classes from the installed package keeps them the very same classes that ``nnunet-mtl`` uses.
"""

from nnunet_mtl.training.trainer import (
    nnUNetTrainerMultitask,
    nnUNetTrainerMultitaskAvgPool,
    nnUNetTrainerMultitaskFgPool,
    nnUNetTrainerMultitaskTiny,
)

__all__ = [
    "nnUNetTrainerMultitask",
    "nnUNetTrainerMultitaskAvgPool",
    "nnUNetTrainerMultitaskFgPool",
    "nnUNetTrainerMultitaskTiny",
]
