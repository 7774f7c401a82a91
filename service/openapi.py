"""What ``/openapi.json`` says beyond what FastAPI infers: error bodies are problem details, and API keys.

* Every error response of every operation is ``application/problem+json`` with the ``ErrorResponse`` schema
  (FastAPI would write ``application/json``, and its own 422 schema, which this service never sends).
* The two ways to send a key are declared as security schemes (``bearerAuth``: ``Authorization: Bearer KEY``;
  ``apiKeyHeader``: ``X-API-Key``), so Swagger UI offers an "Authorize" prompt and generated clients take a key.
  When the service runs with keys, every operation that needs one requires either scheme and documents its 401.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from service.errors import PROBLEM_MEDIA_TYPE
from service.schemas import ErrorResponse

ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API key (API_KEYS) as a bearer token"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "an API key (API_KEYS)"},
}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI, needs_key: Callable[[str], bool] | None) -> None:
    """Make ``app.openapi()`` describe problem-details errors and the key schemes; ``needs_key(path)`` says which
    paths need a key (``None``: the service runs without keys)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _problem_details(schema)
            _security(schema, needs_key)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(path, operation) for path, item in schema.get("paths", {}).items() for operation in item.values()]


def _problem_details(schema: dict[str, Any]) -> None:
    for _, operation in _operations(schema):
        for status, response in operation.get("responses", {}).items():
            if status.isdigit() and int(status) >= 400:
                response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": ERROR_SCHEMA}}
                if status == "422" and response.get("description") == "Validation Error":
                    response["description"] = "a query parameter is invalid"
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorResponse", ErrorResponse.model_json_schema())
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        components.pop(name, None)


def _security(schema: dict[str, Any], needs_key: Callable[[str], bool] | None) -> None:
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    if needs_key is None:
        return
    for path, operation in _operations(schema):
        if needs_key(path):
            operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
            operation.setdefault("responses", {})["401"] = {
                "description": "no API key, or not one of API_KEYS",
                "content": {PROBLEM_MEDIA_TYPE: {"schema": ERROR_SCHEMA}},
            }
