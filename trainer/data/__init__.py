"""Data for training and scoring: ``align`` (dlib chips of a labelled dataset, the ``age-align`` work),
``dataset`` (the label table and the ``tf.data`` pipeline), ``augmentation`` (training-time augmentations and the
fixed degradations ``age-robustness`` scores)."""
