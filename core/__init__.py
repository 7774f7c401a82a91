"""Shared core of the age estimator: CORAL math, face alignment, image decoding and the model file.

Nothing here imports the trainer, the service or FastAPI; ``core.face`` and ``core.artifact.read_metadata``
work without TensorFlow.
"""
