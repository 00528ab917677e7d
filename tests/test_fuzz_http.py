"""Schemathesis over the app's own OpenAPI schema, in process (ASGI, no network), with fake engines.

Every operation in the schema is fuzzed; none is excluded.  Checks: no 5xx (``not_a_server_error``) and every
response whose status the schema declares matches the declared body schema (``response_schema_conformance``).
``status_code_conformance`` is deliberately not run: FastAPI declares only 2xx and 422 per route, while the routes
document their 400/404/409/413/415/429 answers in prose (docstrings and PROTOCOL.md), so it would flag every
intended refusal rather than a bug.
"""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from assistant.memory.store import SQLiteMemory
from server.app import create_app
from tests.test_fuzz_protocol import make_state

CHECKS = [not_a_server_error, response_schema_conformance]


def _build_schema() -> Any:
    # Built at import: schemathesis parametrizes one test per operation from a loaded schema (its lazy,
    # fixture-based loader does not work with this pytest's subtests).  The data folder is removed at exit.
    data_dir = Path(tempfile.mkdtemp(prefix="shoptalk-http-fuzz-"))
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    state = make_state(data_dir)
    # With memory, so the /v1/users routes run for real (without it they answer 503 by design).
    state.engines.memory = SQLiteMemory(data_dir / "memory.sqlite")
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "PNG")
    state.images.put(buf.getvalue())
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(state=state))


schema = _build_schema()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None,
          print_blob=True)
def test_api_conforms_and_never_5xx(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)


@pytest.mark.parametrize(("path", "method", "kwargs", "code"), [
    ("/v1/search", "POST", {"body": {"text": " "}}, "empty_query"),
    ("/v1/search", "POST", {"body": {"text": "hoodie", "ranker": "nope"}}, "unknown_ranker"),
    ("/v1/users/{user_id}/friends", "PUT", {"path_parameters": {"user_id": "ana"},
                                            "body": {"friends": [{"id": "ana"}]}}, "own_friend"),
])
def test_semantic_422_bodies_match_the_schema(path: str, method: str, kwargs: dict[str, Any], code: str) -> None:
    """Semantic refusals answer 400 with a ``{code, message}`` detail; 422 keeps FastAPI's documented shape."""
    case = schema[path][method].Case(**kwargs)
    response = case.call_and_validate(checks=[response_schema_conformance])
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail["code"] == code and detail["message"], detail


def test_duplicate_friend_ids_are_refused() -> None:
    case = schema["/v1/users/{user_id}/friends"]["PUT"].Case(
        path_parameters={"user_id": "dave"}, body={"friends": [{"id": "ana"}, {"id": "ana"}]})
    response = case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail["code"] == "duplicate_friend" and "'ana'" in detail["message"], detail


def test_schema_lists_the_documented_routes() -> None:
    """The fuzz covers what PROTOCOL.md documents (a route missing from the schema would escape it)."""
    paths = set(schema.raw_schema["paths"])
    assert {"/v1/images", "/v1/search", "/v1/products/{product_id}", "/v1/catalog", "/healthz"} <= paths, paths
