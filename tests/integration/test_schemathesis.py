"""schemathesis over the whole API, from the OpenAPI document the server itself serves.

Every operation of ``/api/v1/openapi.json`` gets 100 generated examples (on top of
schemathesis' examples and coverage phases) sent to a real server on a loopback socket
with an admin token. Each response must pass: no 5xx, a documented status code, a
documented content type, a body and headers matching the documented schema, invalid input
refused, and the operation refusing the same request without a token. Beside the
generated cases, each secured operation's 401 and 403 and each path parameter's NUL
guard (400) are checked against the document too.

On both engines, as every API test; ``HO_SCHEMATHESIS_ENGINES=sqlite`` narrows it to one
while iterating locally. ``HO_SCHEMATHESIS_EXAMPLES`` sets the number of generated examples:
100 keeps the suite within its time budget (200 took about a third of the suite's time);
deeper runs by hand (``HO_SCHEMATHESIS_EXAMPLES=1000``) are recorded in docs/fuzzing.md.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import settings
from schemathesis.checks import not_a_server_error
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from headless_ops.services.requests import parse_timestamp
from tests.conftest import drop_pg_database, fresh_pg_database
from tests.support.schemathesis_app import SEED_DEVICES, SEED_WINDOW, LiveServer, openapi_document

#: Generated examples per operation (see the module docstring).
EXAMPLES = int(os.environ.get("HO_SCHEMATHESIS_EXAMPLES", "100"))

# Built at collection time from the app itself (no server yet), so that each operation is a
# test of its own; test_served_document_is_the_one_tested proves the server serves it.
DOCUMENT = openapi_document()
# schemathesis gets a copy: DOCUMENT stays exactly what the app produced.
schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
# deterministic is Hypothesis' derandomize (the same cases on every run); database "none"
# keeps Hypothesis' example database from replaying old failures into a run. The Bearer
# header is not generated: every case carries the real admin token instead (a generated or
# removed one would only ever reach the 401 path), and ignored_auth probes that path.
schema.config.generation.update(
    max_examples=EXAMPLES, deterministic=True, database="none", with_security_parameters=False
)
# The statuses by which this API refuses input. schemathesis' default list also counts
# 5xx and statuses this API never sends (405, 406, 428, 429) as a refusal.
schema.config.checks.negative_data_rejection.expected_statuses = [
    "400",
    "401",
    "403",
    "404",
    "409",
    "413",
    "415",
    "422",
]

#: What every response must pass.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
#: And for generated cases: invalid input refused, the token actually required.
CHECKS = [*CONFORMANCE, negative_data_rejection, ignored_auth]
#: A firmware upload's fields are multipart text (or query strings): schemathesis writes a
#: "negative" JSON null as the text "null", a valid version string, so the upload gets
#: every check but that one (its real validation has its own tests).
TEXT_ONLY_BODIES = {"POST /api/v1/firmware/"}

OPERATIONS = [result.ok() for result in schema.get_all_operations()]


#: Both engines (see the module docstring).
ENGINES = os.environ.get("HO_SCHEMATHESIS_ENGINES", "sqlite,postgresql").split(",")


@pytest.fixture(scope="module", params=ENGINES)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One seeded server per engine for the module: the operations' cases share its state."""
    data_dir = tmp_path_factory.mktemp(f"schemathesis-{request.param}")
    pg_name = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        pg_name = fresh_pg_database(cluster)
        live = LiveServer(LiveServer.settings_for(data_dir, cluster.url(pg_name)))
    else:
        shutil.copy(request.getfixturevalue("sqlite_template"), data_dir / "headless-ops.db")
        live = LiveServer(LiveServer.settings_for(data_dir))
    live.start()
    try:
        yield live
    finally:
        live.stop()
        if pg_name is not None:
            drop_pg_database(request.getfixturevalue("pg_cluster"), pg_name)


class Known:
    """Identifiers that exist on the server, by the parameter that names them.

    Random strings almost never name an existing object: without this, every case of
    ``GET /{op_id}/``, ``/cancel/``, ``PATCH``/``DELETE /{device_id}/`` would be a 404
    and no new operation would name a real device. Half of the cases (chosen from the
    generated value, so the run stays reproducible) get a known identifier instead;
    schemathesis re-validates a case changed this way, so its checks stay exact.
    """

    def __init__(self, server: LiveServer) -> None:
        self.by_param: dict[str, list[str]] = {
            "op_id": list(server.operations.values()),
            "device_id": [d["id"] for d in SEED_DEVICES],
            "device_name": [d["name"] for d in SEED_DEVICES],
            "name": [SEED_WINDOW["name"]],
        }

    def pick(self, param: str, generated: object, salt: str = "") -> object:
        """A known identifier for about half the generated values, else the value itself."""
        pool = self.by_param.get(param)
        if not pool or not isinstance(generated, str):
            return generated
        digest = zlib.crc32((salt + generated).encode("utf-8", "surrogatepass"))
        return pool[(digest // 2) % len(pool)] if digest % 2 == 0 else generated

    def steer(self, case: schemathesis.Case) -> None:
        """Point some of ``case``'s path parameters and body references at real objects."""
        for name, value in list((case.path_parameters or {}).items()):
            case.path_parameters[name] = self.pick(name, value)
        if isinstance(case.body, dict):
            # Salted with the whole body: the coverage phase repeats one value in every case.
            salt = json.dumps(case.body, sort_keys=True, default=str)
            for key, param in (
                ("device_id", "device_id"),
                ("device_name", "device_name"),
                ("maintenance_window", "name"),
            ):
                if key in case.body:
                    case.body[key] = self.pick(param, case.body[key], salt)
            _untangle_deadline(case.body)
        _vary_idempotency_key(case)

    def learn(self, case: schemathesis.Case, response: Any) -> None:
        """Remember what a 201 created, under the path parameter of its item route."""
        if response.status_code != 201:
            return
        body: dict[str, Any] = response.json()
        for path in DOCUMENT["paths"]:
            match = re.fullmatch(re.escape(case.path) + r"\{(\w+)\}/", path)
            if match is None:
                continue
            # Operations and devices are named by their id, windows by their name.
            identifier = body.get("id", body.get(match.group(1)))
            if isinstance(identifier, str):
                self.by_param.setdefault(match.group(1), []).append(identifier)
        if case.path == "/api/v1/inventory_device/":
            self.by_param["device_name"].append(body["name"])


def _untangle_deadline(body: dict[str, Any]) -> None:
    """Drop, from three bodies in four, an ``expires_at`` not later than ``scheduled_at``.

    The server refuses such a pair (a rule JSON Schema cannot state), and schemathesis'
    coverage phase builds every case on one base whose ``expires_at`` (2000-01-01) is
    before its ``scheduled_at``: left alone, that 400 would hide what each case really
    tests (and so any invalid input the server wrongly accepts).
    """
    scheduled, expires = body.get("scheduled_at"), body.get("expires_at")
    if not isinstance(expires, str) or not isinstance(scheduled, str | None):
        return
    try:
        start = parse_timestamp(scheduled) if scheduled is not None else datetime.now(UTC)
        inverted = parse_timestamp(expires) <= start
    except ValueError:
        return
    if inverted and zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode()) % 4:
        del body["expires_at"]


def _vary_idempotency_key(case: schemathesis.Case) -> None:
    """Give three bodies in four an ``Idempotency-Key`` of their own.

    The coverage phase sends one key with every body, so all but the first would be the
    documented 422 (same key, other body) and, again, hide what each case tests. The
    other quarter keeps the generated key: the 422 and the replay stay exercised.
    """
    key = (case.headers or {}).get("Idempotency-Key")
    if not isinstance(key, str):
        return
    digest = zlib.crc32(json.dumps(case.body, sort_keys=True, default=str).encode())
    if digest % 4:
        case.headers["Idempotency-Key"] = f"{key}-{digest:08x}"


@pytest.fixture(scope="module")
def known(server: LiveServer) -> Iterator[Known]:
    """The identifiers known to exist, growing as the cases create objects.

    The steering runs as a ``before_call`` hook: schemathesis re-validates what a hook
    changes (a generated-invalid value replaced by a valid one makes the case a positive
    one), while changes made before ``case.call()`` would count as generated as they are.
    """
    state = Known(server)

    def before_call(
        _context: schemathesis.HookContext, case: schemathesis.Case, _kwargs: Any
    ) -> None:
        # Only generated cases (the hand-made ones below mean exactly what they say).
        if case.operation.schema is schema and case.meta is not None:
            state.steer(case)

    schemathesis.hook("before_call")(before_call)
    try:
        yield state
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(before_call)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """Keep-alive connections for all the cases."""
    with requests.Session() as s:
        yield s


@schema.parametrize()
@settings(max_examples=EXAMPLES)
def test_api(
    case: schemathesis.Case, server: LiveServer, known: Known, session: requests.Session
) -> None:
    auth = {"Authorization": server.bearer}
    response = case.call(base_url=server.base_url, session=session, headers=auth, timeout=30)
    case.validate_response(
        response,
        checks=[*CONFORMANCE, ignored_auth] if case.operation.label in TEXT_ONLY_BODIES else CHECKS,
        headers=auth,
        # ignored_auth re-sends the request without the token through these.
        transport_kwargs={"base_url": server.base_url, "session": session},
    )
    known.learn(case, response)


def test_served_document_is_the_one_tested(server: LiveServer) -> None:
    # The cases come from the document built at collection time; it must be exactly what
    # the running server publishes, and cover every route of the contract.
    served = requests.get(f"{server.base_url}/api/v1/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == DOCUMENT
    labels = {operation.label for operation in OPERATIONS}
    ops = "/api/v1/inventory_device_headless_operation"
    by_name = "/api/v1/inventory_device_name_headless_operation"
    devices = "/api/v1/inventory_device"
    for expected in (
        f"GET {ops}/",
        f"POST {ops}/",
        f"GET {ops}/{{op_id}}/",
        f"POST {ops}/{{op_id}}/cancel/",
        f"GET {by_name}/",
        f"POST {by_name}/",
        f"GET {by_name}/{{op_id}}/",
        f"POST {by_name}/{{op_id}}/cancel/",
        f"GET {devices}/",
        f"POST {devices}/",
        f"GET {devices}/{{device_id}}/",
        f"PATCH {devices}/{{device_id}}/",
        f"DELETE {devices}/{{device_id}}/",
        "GET /healthz",
        "GET /readyz",
    ):
        assert expected in labels


def _path_parameters(operation: schemathesis.APIOperation, value: str) -> dict[str, str]:
    return {p.name: value for p in operation.path_parameters}


def test_refusals_match_the_document(server: LiveServer, session: requests.Session) -> None:
    # Generated cases all carry an admin token; here every secured operation is asked
    # without one (401 with its challenge) and with tokens of one narrow scope (403 for
    # at least one), and every answer is held to the document.
    secured = [op for op in OPERATIONS if DOCUMENT["paths"][op.path][op.method].get("security")]
    assert len(secured) >= 13
    for operation in secured:
        case = operation.Case(path_parameters=_path_parameters(operation, "x"))
        response = case.call(base_url=server.base_url, session=session, timeout=30)
        assert response.status_code == 401, operation.label
        assert response.headers["www-authenticate"][0].startswith("Bearer"), operation.label
        assert response.json()["detail"].startswith("missing Authorization"), operation.label
        case.validate_response(response, checks=CONFORMANCE)
        statuses = []
        for bearer in server.narrow_bearers:
            case = operation.Case(path_parameters=_path_parameters(operation, "x"))
            response = case.call(
                base_url=server.base_url,
                session=session,
                headers={"Authorization": bearer},
                timeout=30,
            )
            case.validate_response(response, checks=CONFORMANCE)
            statuses.append(response.status_code)
        assert 403 in statuses, (operation.label, statuses)


def test_nul_in_a_path_parameter_is_a_documented_400(
    server: LiveServer, session: requests.Session
) -> None:
    # No id or name can hold U+0000 (PostgreSQL cannot store it): the server refuses it at
    # the door with a 400, which each operation with a path parameter must document.
    with_path = [op for op in OPERATIONS if op.path_parameters]
    assert len(with_path) >= 8
    for operation in with_path:
        case = operation.Case(path_parameters=_path_parameters(operation, "dev_\x00"))
        response = case.call(
            base_url=server.base_url,
            session=session,
            headers={"Authorization": server.bearer},
            timeout=30,
        )
        assert response.status_code == 400, operation.label
        assert response.json()["detail"] == "the URL may not contain the NUL character (%00)"
        case.validate_response(response, checks=CONFORMANCE)
