"""``age-export``'s work: ``formats`` (SavedModel, ONNX, TFLite writers and runners) and ``export`` (write, check
against the ``.h5`` on real chips, keep with a sidecar)."""
