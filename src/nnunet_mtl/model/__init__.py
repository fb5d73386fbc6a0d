"""Model: the multitask wrapper around an nnU-Net encoder-decoder network."""

from nnunet_mtl.model.multitask import MultitaskOutput, MultitaskUNet

__all__ = ["MultitaskOutput", "MultitaskUNet"]
