"""Every submit route documents the submit headers (Idempotency-Key, Prefer) and no other does."""

from __future__ import annotations

from typing import Any

import pytest

from generation.api.schema import ERROR_COMPONENTS, STATUS_MEANINGS, SUBMIT_OPERATIONS

SUBMIT_HEADERS = {"Idempotency-Key", "Prefer"}
# The routes that make jobs, whatever they are called: OpenAI answers a spent balance with a 429,
# so its image routes do not document the 402 that marks every other charged route.
OPENAI_SUBMITS = {"/v1/images/generations", "/v1/images/edits", "/v1/images/variations"}


@pytest.fixture(scope="module")
def operations(django_db_blocker: Any) -> list[tuple[str, str, dict[str, Any]]]:
    from django.test import Client

    with django_db_blocker.unblock():
        response = Client().get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    return [
        (path, method, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    ]


def headers_of(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p.get("in") == "header"}


def is_charged(path: str, method: str, operation: dict[str, Any]) -> bool:
    """Whether the operation charges for a job (so it is a submit), by what it documents.

    A 402 that means the plan lacks something other than credits (own models' storage) is no
    charge.
    """
    refused = operation["responses"].get("402", {}).get("description")
    return refused == STATUS_MEANINGS[402] or (method == "post" and path in OPENAI_SUBMITS)


def test_every_submit_operation_documents_the_submit_headers(operations):
    submits = [op for op in operations if op[2]["operationId"] in SUBMIT_OPERATIONS]
    # Every id listed names an operation of the schema (a renamed route is not silently dropped).
    assert {op["operationId"] for _, _, op in submits} == SUBMIT_OPERATIONS
    problems = []
    for path, method, operation in submits:
        where = f"{method.upper()} {path}"
        if not SUBMIT_HEADERS <= headers_of(operation):
            problems.append(f"{where}: lacks {sorted(SUBMIT_HEADERS - headers_of(operation))}")
        for parameter in operation["parameters"]:
            if parameter["name"] in SUBMIT_HEADERS and not parameter.get("description"):
                problems.append(f"{where}: {parameter['name']} has no description")
        responses = operation["responses"]
        if "Preference-Applied" not in responses["200"].get("headers", {}):
            problems.append(f"{where}: 200 does not document Preference-Applied")
        reused = responses.get("422", {})
        ref = reused.get("content", {}).get("application/json", {}).get("schema", {})
        shapes = ERROR_COMPONENTS[operation["tags"][0]]
        if ref.get("$ref", "").rpartition("/")[2] != shapes.get(422, shapes[None]):
            problems.append(f"{where}: 422 is {ref or 'missing'}, not the format's error")
        if "Idempotency-Key" not in reused.get("description", ""):
            problems.append(f"{where}: 422 does not say a reused Idempotency-Key is one")
    assert not problems, "\n".join(problems)


def test_a_new_charged_route_cannot_forget_the_submit_headers(operations):
    # A route that charges for a job takes the headers; add its operation id to SUBMIT_OPERATIONS.
    forgotten = [
        f"{method.upper()} {path} ({operation['operationId']})"
        for path, method, operation in operations
        if is_charged(path, method, operation) and operation["operationId"] not in SUBMIT_OPERATIONS
    ]
    assert not forgotten, "\n".join(forgotten)


def test_no_fetch_list_or_cancel_operation_documents_the_submit_headers(operations):
    others = [op for op in operations if op[2]["operationId"] not in SUBMIT_OPERATIONS]
    assert any("fetch" in path for path, _, _ in others)
    assert any(path.endswith("/cancel") for path, _, _ in others)
    wrong = [
        f"{method.upper()} {path}"
        for path, method, operation in others
        if headers_of(operation) & SUBMIT_HEADERS
        or "Preference-Applied" in operation["responses"].get("200", {}).get("headers", {})
    ]
    assert not wrong, "\n".join(wrong)
