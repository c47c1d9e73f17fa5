"""`make bench`'s signing benchmark (not run by CI): what it times is a valid signature of the
sender's own rendered message, and it reports a rate for both sides and their ratio."""

from __future__ import annotations

from datetime import UTC, datetime

import dkim
import pytest

from penguinmails.bench import signing
from penguinmails.common.dkim.keys import DkimKey, KeyState, generate_private_key
from penguinmails.common.dkim.signer import DkimSigner


def test_the_benchmarked_message_is_signed_validly() -> None:
    now = datetime.now(UTC)
    keys = [
        DkimKey("rsa1", "rsa2048", KeyState.ACTIVE, now, generate_private_key("rsa2048")),
        DkimKey("ed1", "ed25519", KeyState.ACTIVE, now, generate_private_key("ed25519")),
    ]
    records = {
        f"{k.selector}._domainkey.bench.example.".encode(): k.dns_value().encode() for k in keys
    }
    message = signing.sample_message()
    assert b"List-Unsubscribe:" in message and len(message) > 4000  # the sender's, ~5 KB
    signed = DkimSigner.from_dkim_keys("bench.example", keys).sign(message)
    verifier = dkim.DKIM(signed)
    for idx in (0, 1):
        assert verifier.verify(idx=idx, dnsfunc=lambda name, timeout=5: records.get(name))


def test_it_reports_both_rates_and_their_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing, "ROUNDS", 3)
    monkeypatch.setattr(signing, "PER_ROUND", 2)
    ours, bare, ratio = signing.measure()
    assert ours > 0 and bare > 0 and ratio > 0
