"""Hostwinds refusals become conditions that name the field to fix."""

from __future__ import annotations

import pytest

from penguinmails.operator.providers.hostwinds import explain
from penguinmails.operator.providers.hostwinds_api import (
    HostwindsRejectedError,
    HostwindsUnavailableError,
)


@pytest.mark.parametrize(
    ("message", "reason", "field"),
    [
        ("Invalid API key", "InvalidAPIKey", "apiKeySecretRef"),
        ("Invalid location_id 99", "UnknownLocation", "locationId"),
        ("Invalid rid 7: no such product", "UnknownPlan", "planId"),
        ("Invalid template foo", "UnknownTemplate", "template"),
    ],
)
def test_refusals_name_the_field_and_are_permanent(message: str, reason: str, field: str) -> None:
    error = explain(HostwindsRejectedError("add_instance", message))
    assert error.reason == reason and f"spec.provider.hostwinds.{field}" in error.message
    assert not error.transient


def test_unexplained_refusal_is_retried_because_the_create_may_have_happened() -> None:
    error = explain(HostwindsRejectedError("add_instance", "An unexpected error occurred"))
    assert error.transient and error.reason == "HostwindsRejected"


def test_unavailable_is_transient() -> None:
    error = explain(HostwindsUnavailableError("get_instances", "HTTP 503"))
    assert error.transient and error.reason == "HostwindsUnavailable"
