"""nnunet-mtl: multitask nnU-Net v2 for 3D CT pancreas segmentation and lesion subtyping."""

__version__ = "0.1.0"
