"""The bare work a benchmark's subject is compared with, shared by the benchmarks."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa


def bare_signer(rsa_pem: bytes, ed_pem: bytes) -> Callable[[bytes], bytes]:
    """RSA-2048 and Ed25519 signatures of a message by `cryptography` alone, with its body hash:
    the work DKIM signing cannot avoid, without any canonicalization or header building."""
    rsa_key = serialization.load_pem_private_key(rsa_pem, password=None)
    ed_key = serialization.load_pem_private_key(ed_pem, password=None)
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert isinstance(ed_key, ed25519.Ed25519PrivateKey)

    def sign(message: bytes) -> bytes:
        head, _, body = message.partition(b"\r\n\r\n")
        body_hash = base64.b64encode(hashlib.sha256(body).digest())
        rsa_sig = rsa_key.sign(head, padding.PKCS1v15(), hashes.SHA256())
        ed_sig = ed_key.sign(hashlib.sha256(head).digest())
        return body_hash + base64.b64encode(rsa_sig) + base64.b64encode(ed_sig)

    return sign
