"""``/api/v1/openapi.json`` and ``/api/docs`` through the real server, on both engines.

Direct assertions on what the document promises: 400 (never FastAPI's validation 422;
the only 422 is the Idempotency-Key one of the two operation POSTs), 401 with its
``WWW-Authenticate`` challenge and 403 on every secured operation, the statuses each route
can answer (404, 409, 413, 415), the three body forms of both operation POSTs with a
schema per operation type, and that the document's own examples are accepted as written.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from headless_ops.domain.operations import OPERATION_ALIASES, PARAMETER_MODELS, OperationType
from tests.conftest import Api

OPS = "/api/v1/inventory_device_headless_operation/"
BY_NAME = "/api/v1/inventory_device_name_headless_operation/"
DEVICES = "/api/v1/inventory_device/"
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
BODY_TYPES = ("application/json", *FORMS)


#: The statuses each route can answer, every one of which it must document.
STATUSES: list[tuple[str, str, set[str]]] = [
    ("GET", OPS, {"200", "400", "401", "403"}),
    ("POST", OPS, {"201", "400", "401", "403", "404", "413", "415", "422"}),
    ("GET", f"{OPS}{{op_id}}/", {"200", "401", "403", "404"}),
    ("POST", f"{OPS}{{op_id}}/cancel/", {"200", "401", "403", "404", "409"}),
    ("POST", BY_NAME, {"201", "400", "401", "403", "404", "413", "415", "422"}),
    ("POST", f"{BY_NAME}{{op_id}}/cancel/", {"200", "401", "403", "404", "409"}),
    ("POST", DEVICES, {"201", "400", "401", "403", "409", "413", "415"}),
    ("GET", f"{DEVICES}{{device_id}}/", {"200", "401", "403", "404"}),
    (
        "PATCH",
        f"{DEVICES}{{device_id}}/",
        {"200", "400", "401", "403", "404", "409", "413", "415"},
    ),
    ("DELETE", f"{DEVICES}{{device_id}}/", {"204", "401", "403", "404", "409"}),
    ("GET", "/readyz", {"200", "503"}),
]


@pytest.fixture
async def document(api: Api) -> dict[str, Any]:
    """The document as the server serves it."""
    response = await api.client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc: dict[str, Any] = response.json()
    return doc


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every ``(METHOD, path, operation)`` of the document."""
    return [
        (method.upper(), path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
    ]


def error_schema(response: dict[str, Any]) -> Any:
    return response["content"]["application/json"]["schema"]


async def test_document_describes_the_contract(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    labels = {(method, path) for method, path, _ in operations(document)}
    for base in (OPS, BY_NAME):
        assert {
            ("GET", base),
            ("POST", base),
            ("GET", f"{base}{{op_id}}/"),
            ("POST", f"{base}{{op_id}}/cancel/"),
        } <= labels
    assert {
        ("GET", DEVICES),
        ("POST", DEVICES),
        ("GET", f"{DEVICES}{{device_id}}/"),
        ("PATCH", f"{DEVICES}{{device_id}}/"),
        ("DELETE", f"{DEVICES}{{device_id}}/"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    } <= labels
    # The document and the docs page are not API operations of their own.
    assert "/api/v1/openapi.json" not in document["paths"]
    assert "/api/docs" not in document["paths"]


async def test_no_validation_422_only_the_idempotency_one(document: dict[str, Any]) -> None:
    with_422 = []
    for method, path, op in operations(document):
        if "422" in op["responses"]:
            with_422.append((method, path))
            assert "Idempotency-Key" in op["responses"]["422"]["description"]
            assert error_schema(op["responses"]["422"]) == ERROR_BODY
    assert sorted(with_422) == [("POST", OPS), ("POST", BY_NAME)]
    # FastAPI's validation error shapes are gone entirely, not merely unreferenced.
    text = json.dumps(document)
    assert "HTTPValidationError" not in text
    assert '"ValidationError"' not in text


async def test_every_input_can_be_refused_with_a_documented_400(document: dict[str, Any]) -> None:
    checked = 0
    for method, path, op in operations(document):
        if op.get("parameters") or op.get("requestBody"):
            assert "400" in op["responses"], (method, path)
            assert error_schema(op["responses"]["400"]) == ERROR_BODY, (method, path)
            checked += 1
    assert checked >= 13


async def test_secured_operations_document_401_with_challenge_and_403(
    document: dict[str, Any],
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["HTTPBearer"]["description"],
    }
    secured = 0
    for method, path, op in operations(document):
        if path in ("/healthz", "/readyz", "/metrics"):
            assert "security" not in op and "401" not in op["responses"], (method, path)
            continue
        assert op["security"] == [{"HTTPBearer": []}], (method, path)
        unauthorized = op["responses"]["401"]
        assert error_schema(unauthorized) == ERROR_BODY
        challenge = unauthorized["headers"]["WWW-Authenticate"]
        assert challenge["required"] is True and challenge["schema"] == {"type": "string"}
        assert error_schema(op["responses"]["403"]) == ERROR_BODY, (method, path)
        secured += 1
    assert secured >= 13


async def test_statuses_each_route_can_answer_are_documented(document: dict[str, Any]) -> None:
    for method, path, statuses in STATUSES:
        responses = document["paths"][path][method.lower()]["responses"]
        missing = statuses - set(responses)
        assert not missing, (method, path, sorted(missing))
    for method, path, op in operations(document):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                assert error_schema(response) == ERROR_BODY, (method, path, status)


@pytest.mark.parametrize(("path", "key"), [(OPS, "device_id"), (BY_NAME, "device_name")])
async def test_both_operation_posts_document_the_three_body_forms(
    document: dict[str, Any], path: str, key: str
) -> None:
    post = document["paths"][path]["post"]
    body = post["requestBody"]
    assert body["required"] is True
    assert tuple(body["content"]) == BODY_TYPES
    envelope = {
        "type": "object",
        "additionalProperties": False,
        "required": ["data"],
        "properties": {
            "data": {"type": "string", "description": "The operation as a JSON string."}
        },
    }
    for form in FORMS:
        assert body["content"][form]["schema"] == envelope
    # JSON: the operation itself, or the envelope ({"data": string or the operation}).
    operation, json_envelope = body["content"]["application/json"]["schema"]["oneOf"]
    assert json_envelope["required"] == ["data"]
    assert json_envelope["properties"]["data"]["oneOf"] == [
        envelope["properties"]["data"],
        operation,
    ]
    # One variant per operation type, told apart by operation_type, each naming its
    # parameters' schema (which the document carries).
    names: list[str] = []
    for variant in operation["oneOf"]:
        assert variant["additionalProperties"] is False
        assert {key, "operation_type"} <= set(variant["required"])
        other = "device_id" if key == "device_name" else "device_name"
        assert key in variant["properties"] and other not in variant["properties"]
        types = variant["properties"]["operation_type"]["enum"]
        canonical = OperationType(types[0])
        assert types[1:] == [a for a, t in OPERATION_ALIASES.items() if t is canonical]
        ref = variant["properties"]["parameters"]["$ref"]
        model = PARAMETER_MODELS[canonical]
        assert ref == f"#/components/schemas/{model.__name__}"
        assert document["components"]["schemas"][model.__name__]["additionalProperties"] is False
        # parameters may be left out only where the type has no required parameter.
        required = bool(model.model_json_schema().get("required"))
        assert ("parameters" in variant["required"]) is required, canonical
        names += types
    assert sorted(names) == sorted([t.value for t in OperationType] + list(OPERATION_ALIASES))
    # The 201 says where the operation is, and when it is a replay.
    headers = post["responses"]["201"]["headers"]
    assert headers["Location"]["required"] is True
    assert headers["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}


@pytest.mark.parametrize(("path", "key"), [(OPS, "device_id"), (BY_NAME, "device_name")])
async def test_the_documented_examples_are_accepted(
    api: Api, document: dict[str, Any], path: str, key: str
) -> None:
    # Each media type's example, sent as written, schedules the same operation.
    headers = await api.auth()
    r = await api.client.post(
        DEVICES,
        json={"id": "dev_67892", "name": "gw-0001", "protocol": "cwmp"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    content = document["paths"][path]["post"]["requestBody"]["content"]
    created = []
    for media_type, spec in content.items():
        example = spec["example"]
        if media_type == "application/json":
            r = await api.client.post(path, json=example, headers=headers)
        elif media_type == "multipart/form-data":
            r = await api.client.post(
                path, files={"data": (None, example["data"])}, headers=headers
            )
        else:
            r = await api.client.post(path, data=example, headers=headers)
        assert r.status_code == 201, (media_type, r.text)
        assert r.headers["location"].endswith(f"{r.json()['id']}/")
        created.append(r.json())
    assert len(created) == 3
    for op in created:
        assert op["device_id"] == "dev_67892"
        assert op["device_name"] == "gw-0001"
        assert op[key] == content["application/json"]["example"][key]
        assert op["operation_type"] == "backup_configuration"
        assert op["scheduled_at"] == "2024-01-16T02:00:00Z"
        assert op["parameters"] == {
            "backup_location": "s3://backups/devices/",
            "compression": True,
            "retention_days": 30,
        }
        assert op["status"] == "scheduled"


async def test_human_docs_are_served(api: Api) -> None:
    response = await api.client.get("/api/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<html" in page.lower()
    assert "swagger-ui" in page
    # The page loads the same document the tests above read.
    assert "/api/v1/openapi.json" in page
