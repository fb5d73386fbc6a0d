"""What is determined on the validation predictions after training and applied by ``predict``: mask
postprocessing (connected components, the nnU-Net way) and temperature scaling of the subtype probabilities."""
