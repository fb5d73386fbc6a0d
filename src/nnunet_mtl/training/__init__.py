"""Training: the multitask nnU-Net trainer, its presets, planning and the DDP-aware loss."""
