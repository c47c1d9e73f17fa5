"""TOTP against RFC 6238's own test vectors (appendix B, SHA-1) and its replay-relevant step."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlparse

from penguinmails.common import totp

# RFC 6238 appendix B: the SHA-1 seed is the ASCII string "12345678901234567890"; the RFC's
# 8-digit codes, of which a 6-digit authenticator shows the last six.
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode("ascii")
RFC_VECTORS = {
    59: "94287082",
    1111111109: "07081804",
    1111111111: "14050471",
    1234567890: "89005924",
    2000000000: "69279037",
    20000000000: "65353130",
}


def test_codes_match_the_rfc_vectors() -> None:
    for at, expected in RFC_VECTORS.items():
        assert totp.code_at(RFC_SECRET, at) == expected[-6:], at
        assert totp.hotp(base64.b32decode(RFC_SECRET), at // 30, digits=8) == expected


def test_a_code_matches_its_step_and_its_neighbours_only() -> None:
    secret = totp.new_secret()
    at = 1_700_000_000.0
    step = totp.step_of(at)
    assert totp.matching_step(secret, totp.code_at(secret, at), at) == step
    assert totp.matching_step(secret, totp.code_at(secret, at - 30), at) == step - 1
    assert totp.matching_step(secret, totp.code_at(secret, at + 30), at) == step + 1
    assert totp.matching_step(secret, totp.code_at(secret, at - 60), at) is None
    assert totp.matching_step(secret, "abcdef", at) is None
    assert totp.matching_step(secret, "12345", at) is None
    assert totp.matching_step(secret, "١٢٣٤٥٦", at) is None  # digits, but not ASCII ones


def test_the_uri_carries_the_secret_for_authenticator_apps() -> None:
    secret = totp.new_secret()
    assert len(base64.b32decode(secret)) == 20
    uri = urlparse(totp.otpauth_uri(secret, "ada@example.com"))
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert uri.path == "/PenguinMails:ada@example.com"
    query = parse_qs(uri.query)
    assert query["secret"] == [secret] and query["period"] == ["30"] and query["digits"] == ["6"]
