"""HTTP routes: ``predict`` (POST /predict), ``status`` (GET /health, GET /metrics) and ``page`` (GET /)."""
