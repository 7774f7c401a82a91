"""``age-batch``: score a photo archive on Ray Data into a Parquet dataset, exactly once across kills.

Modules, one concern each: ``inputs`` (which photos: a folder, a glob, a path list, any pyarrow file system),
``output`` (the Parquet parts, their schema and what a rerun may skip), ``model`` (the engine and the answer per
face), ``stages`` (the Ray actors and the write task), ``pipeline`` (the dataset from photos to parts, progress and
summary) and ``cli`` (the command). Only ``stages`` and ``pipeline`` import Ray.
"""
