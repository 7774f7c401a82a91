"""Offline batch trainer: dataset alignment, training and evaluation. Depends on ``core`` only."""
