"""The example campaign's message, as the sender builds it, scored by SpamAssassin (Debian,
local tests only: no network, so no DNS blocklists, no URIBL, no DKIM lookups)."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid

import pytest

from penguinmails.common.db.ledger import CampaignPlan, Relay
from penguinmails.common.dkim.keys import generate_private_key
from penguinmails.common.dkim.signer import DkimSigner
from penguinmails.sender.render import MessageParts, Renderer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("spamassassin") is None, reason="spamassassin not installed"),
]

EXAMPLE = {
    "subject": "Quick question about {{ company }}",
    "text": (
        "Hi {{ first_name }},\n\n"
        "I noticed {{ company }} is hiring engineers. We help teams like yours ship faster.\n"
        "Would a 15-minute call next week be useful?\n\nBest,\nJane"
    ),
    "html": (
        "<html><body><p>Hi {{ first_name }},</p>"
        "<p>I noticed {{ company }} is hiring engineers. We help teams like yours ship "
        "faster.</p><p>Would a 15-minute call next week be useful?</p>"
        "<p>Best,<br>Jane</p></body></html>"
    ),
}


def score(subject: str, text: str | None, html: str | None) -> float:
    plan = CampaignPlan(
        from_address="jane@acme.example",
        from_name="Jane Doe",
        subject=subject,
        text=text,
        html=html,
        domain="acme.example",
        dkim_secret="acme-dkim",
        unsubscribe_url="https://unsubscribe.acme.example/u",
        unsubscribe_mailto="unsubscribe@acme.example",
        postal_address="1 Main St, Springfield, IL 62701, US",
        relays=[Relay(name="relay", host="127.0.0.1", port=25)],
    )
    fields = {"first_name": "Bob", "company": "Initech"}
    parts = MessageParts(1, uuid.uuid4(), "bob@dest.example", fields, "a" * 55, "b" * 55)
    message = DkimSigner("acme.example", [("rsa1", generate_private_key("rsa2048"))]).sign(
        Renderer(plan).render(parts)
    )
    result = subprocess.run(
        ["spamassassin", "--local", "--test-mode"],
        input=message,
        capture_output=True,
        timeout=120,
        check=True,
    )
    status = re.search(rb"X-Spam-Status: \w+, score=(-?[\d.]+)", result.stdout)
    assert status is not None, result.stdout[-2000:]
    return float(status.group(1))


def test_example_campaign_scores_below_two() -> None:
    assert score(EXAMPLE["subject"], EXAMPLE["text"], EXAMPLE["html"]) < 2


def test_the_checker_does_flag_spammy_content() -> None:
    # Guards the test above: the same pipeline scores an obvious spam message high.
    spam = (
        "<html><body><p><b>FREE!!! 100% GUARANTEED</b> CLICK HERE to claim your CASH PRIZE "
        "and lose weight fast, no prescription viagra, act now, limited time, risk free!!!"
        "</p></body></html>"
    )
    assert score("FREE CASH!!! ACT NOW $$$", None, spam) >= 2
