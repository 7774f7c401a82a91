"""Scoring trained models: ``metrics`` (MAE, RMSE, CS@5; the Keras training metrics), ``scoring`` (batches in,
logits and ages out), ``evaluate`` (the ``age-evaluate`` work), ``calibrate`` (split-conformal intervals,
``age-calibrate``), ``robustness`` (``age-robustness``), ``groups`` (scores per group), ``plots``."""
