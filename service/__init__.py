"""FastAPI inference service and the folder demo. Depends on ``core`` only, never on ``trainer``."""
