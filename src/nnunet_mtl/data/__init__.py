"""Data: the assignment folder layout, the synthetic CT phantom, and conversion to nnU-Net."""
