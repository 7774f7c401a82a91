"""The offline side: dataset alignment, training, evaluation and export; depends on ``core`` only.

By concern: ``data/`` (alignment, the label table and ``tf.data`` pipeline, augmentation), ``model/`` (networks,
pretrained weights, optimiser, ensembles), ``training/`` (the ``age-train`` job), ``evaluation/`` (metrics,
scoring, calibration, reports), ``export/`` (other runtimes); ``cli/`` holds the commands, thin entry points.
"""
