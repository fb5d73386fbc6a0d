"""Folder for nnU-Net's ``nnUNet_extTrainer`` lookup (see ``nnunet-mtl trainer-path``)."""
