"""Inference: one forward per case (whole volume) or a Gaussian sliding window, both outputs together."""
