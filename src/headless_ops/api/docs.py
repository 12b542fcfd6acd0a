"""Pieces of the OpenAPI document the routers share: error responses and JSON bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from headless_ops.api.errors import ErrorBody

__all__ = ["AUTH_RESPONSES", "Responses", "error_doc", "json_request_body"]

Responses = dict[int | str, dict[str, Any]]


def error_doc(description: str) -> dict[str, Any]:
    """An error response in the one error shape."""
    return {"model": ErrorBody, "description": description}


#: What every authenticated route may answer.
AUTH_RESPONSES: Responses = {
    401: error_doc("Missing, malformed, unknown, expired or revoked Bearer token"),
    403: error_doc("The token lacks the required scope"),
}


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """A required ``application/json`` request body described by ``model``.

    The routes read their bodies themselves (strict JSON, 415 for other types), so the
    document is given explicitly rather than inferred from a parameter.
    """
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"required": True, "content": {"application/json": {"schema": schema}}}
