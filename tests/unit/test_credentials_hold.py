"""Releasing the provider's API-key Secret when the SmtpServer is deleted (CredentialsHold),
under the chart's RBAC, where the operator writes tenant Secrets only through a RoleBinding
that the hold keeps until its last Secret is released."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import ForbiddenError

from penguinmails.operator.context import Context
from penguinmails.operator.secret_access import ACCOUNT_ENV, ROLE_ENV
from penguinmails.operator.smtpserver import ControllerState, CredentialsHold
from penguinmails.operator.tenant_resources import TENANT_LABEL

NAMESPACE = "tenant-acme"


class TerminatingNamespace:
    """The API server as a namespace being deleted shows it to the operator: its Secrets are
    writable only while the secret-writer binding exists; a new binding cannot be created."""

    def __init__(self) -> None:
        self.binding = True
        self.secret_finalizers = {"smtpserver.penguinmails.io/u-1"}

    # Kube (operator/kube.py): what ensure_secret_writer() calls.
    async def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Any:
        return {"metadata": {"name": name, "labels": {TENANT_LABEL: "acme"}}}

    async def apply(self, body: dict[str, Any]) -> Any:
        if not self.binding:
            # As the dynamic client raises it: a terminating namespace takes nothing new.
            raise ForbiddenError(ApiException(status=403, reason="NamespaceTerminating"))
        return body

    # CoreV1Api / RbacAuthorizationV1Api: what the hold patches and reads.
    def patch_namespaced_secret(self, name: str, namespace: str, body: Any, **_: Any) -> None:
        if not self.binding:
            raise ApiException(status=403, reason="Forbidden")
        self.secret_finalizers.clear()

    def patch_namespaced_role_binding(self, name: str, namespace: str, body: Any, **_: Any) -> None:
        self.binding = False  # our finalizer was its last: namespace deletion removes it

    def read_namespaced_role_binding(self, name: str, namespace: str) -> Any:
        if not self.binding:
            raise ApiException(status=404, reason="Not Found")
        return {}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> TerminatingNamespace:
    monkeypatch.setenv(ROLE_ENV, "pm-secret-writer")
    monkeypatch.setenv(ACCOUNT_ENV, "penguinmails/penguinmails")
    return TerminatingNamespace()


def _hold(api: TerminatingNamespace) -> CredentialsHold:
    state = cast(ControllerState, SimpleNamespace(core=lambda: api, rbac=lambda: api))
    ctx = cast(Context, SimpleNamespace(kube=api))
    return CredentialsHold(ctx, state, NAMESPACE, "u-1")


async def test_a_second_release_after_the_binding_went_is_done_not_forbidden(
    api: TerminatingNamespace,
) -> None:
    # kopf may run the deletion handler again after it succeeded (a stale event): the first
    # release let the binding go, so the second cannot write the Secret, and need not.
    await _hold(api).release("hostwinds")
    assert api.secret_finalizers == set() and not api.binding
    await _hold(api).release("hostwinds")


async def test_forbidden_while_the_binding_still_exists_is_an_error(
    api: TerminatingNamespace,
) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise ApiException(status=403, reason="Forbidden")

    api.patch_namespaced_secret = refuse  # type: ignore[method-assign]
    with pytest.raises(ApiException):
        await _hold(api).release("hostwinds")
    assert api.binding, "the binding is kept while the Secret is still held"
