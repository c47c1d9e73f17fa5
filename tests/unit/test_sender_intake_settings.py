"""The intake's settings: complaint addresses and message size limit, with clear errors."""

from __future__ import annotations

import pytest

from penguinmails.sender.intake import (
    DEFAULT_MAX_BYTES,
    complaint_addresses,
    max_message_bytes,
)


def test_complaint_addresses_are_a_lower_cased_list() -> None:
    assert complaint_addresses(" FBL@Platform.example, abuse-fbl@platform.example ,") == {
        "fbl@platform.example",
        "abuse-fbl@platform.example",
    }
    assert complaint_addresses("") == frozenset()


def test_a_complaint_address_without_domain_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"PM_COMPLAINT_ADDRESS.*'fbl'.*fbl@your-domain"):
        complaint_addresses("fbl")


def test_size_limit_defaults_and_validates() -> None:
    assert max_message_bytes("") == DEFAULT_MAX_BYTES
    assert max_message_bytes("65536") == 65536
    for bad in ("10MB", "-1", "100"):
        with pytest.raises(ValueError, match="PM_INTAKE_MAX_BYTES must be a number of bytes"):
            max_message_bytes(bad)
