"""The shape of mailbox rotation (designed in the models first; the sender does not rotate yet)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from penguinmails.api.crdgen import build_crd
from penguinmails.api.v1alpha1 import CampaignSpec, SendingDomain, SendingDomainSpec
from penguinmails.api.v1alpha1.smtpserver import SmtpServerSpec

CAMPAIGN: dict[str, Any] = {
    "sendingDomainRef": {"name": "acme"},
    "from": {"address": "jane@acme.example", "name": "Jane"},
    "subject": "Hi",
    "text": "Hello",
    "audience": {"lists": ["leads"]},
}


def test_a_campaign_rotates_across_mailboxes_of_several_domains() -> None:
    spec = CampaignSpec.model_validate(
        CAMPAIGN
        | {
            "rotation": {
                "mailboxes": [
                    {"sendingDomainRef": {"name": "acme"}},
                    {"sendingDomainRef": {"name": "acme-mail"}, "localParts": ["sales", "j.doe"]},
                ]
            }
        }
    )
    assert spec.rotation is not None and spec.rotation.sticky
    assert spec.rotation.mailboxes[1].local_parts == ["sales", "j.doe"]
    with pytest.raises(ValidationError, match="localParts"):
        CampaignSpec.model_validate(
            CAMPAIGN
            | {
                "rotation": {
                    "mailboxes": [{"sendingDomainRef": {"name": "a"}, "localParts": ["a b"]}]
                }
            }
        )
    with pytest.raises(ValidationError, match="mailboxes"):
        CampaignSpec.model_validate(CAMPAIGN | {"rotation": {"mailboxes": []}})


def test_mailboxes_have_their_own_cap_and_warmup_keyed_by_local_part() -> None:
    spec = SendingDomainSpec.model_validate(
        {
            "domain": "acme.example",
            "dnsProvider": {"type": "manual"},
            "mailboxes": [
                {"localPart": "jane", "displayName": "Jane", "dailyLimit": 40},
                {"localPart": "sales", "warmup": {"initialPerDay": 5, "targetPerDay": 50}},
            ],
        }
    )
    assert [m.daily_limit for m in spec.mailboxes] == [40, 50]
    assert spec.mailboxes[1].warmup is not None and spec.mailboxes[1].warmup.initial_per_day == 5
    schema = build_crd(SendingDomain)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    mailboxes = schema["properties"]["spec"]["properties"]["mailboxes"]
    # A list-map: kubectl apply merges by localPart, and two entries cannot share one.
    assert mailboxes["x-kubernetes-list-type"] == "map"
    assert mailboxes["x-kubernetes-list-map-keys"] == ["localPart"]


def test_server_weight_bounds() -> None:
    base: dict[str, Any] = {
        "hostname": "mx1.acme.example",
        "provider": {"relay": {"host": "smtp.relay.example"}},
    }
    assert SmtpServerSpec.model_validate(base).weight == 100
    assert SmtpServerSpec.model_validate(base | {"weight": 0}).weight == 0  # drain
    with pytest.raises(ValidationError, match="weight"):
        SmtpServerSpec.model_validate(base | {"weight": 1001})
