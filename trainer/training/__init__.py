"""The ``age-train`` job: ``config`` (the validated training config), ``job`` (the steps in order),
``distribute`` (strategy, precision), ``fit`` (Keras ``fit`` on one machine), ``multiworker`` (the custom loop for
several workers), ``callbacks``, ``run_folder`` (the run's splits, config and paths), ``results`` (score, calibrate
and save the final model)."""
