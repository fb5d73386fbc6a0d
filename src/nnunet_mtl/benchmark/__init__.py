"""``nnunet-mtl benchmark``: stock nnU-Net, the seed's way and nnunet-mtl on the same weights (not used by
prediction itself)."""
