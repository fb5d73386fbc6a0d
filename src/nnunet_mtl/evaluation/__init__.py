"""Evaluation: whole-volume region Dice and case-level subtype metrics."""
