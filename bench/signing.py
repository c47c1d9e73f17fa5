"""DKIM signing throughput: the sender's signer against a bare baseline, in the same run.

Both sign the same rendered ~5 KB message (the sender's own Renderer: every header it sends)
with the same RSA-2048 and Ed25519 keys:

* signer: `common.dkim.signer.DkimSigner.sign()`, as the sender calls it (wire form check,
  relaxed canonicalization of headers and body, h= selection with over-signing, both
  DKIM-Signature headers built and prepended);
* baseline: what no signer can avoid: SHA-256 of the body, one RSA-2048 PKCS#1 v1.5 and one
  Ed25519 signature over the header block (`cryptography`, as dkimpy's own cryptography
  backend does), base64 of both. No canonicalization, no header selection.

Both are timed in CPU seconds of this process (`time.process_time()`): on a shared machine
the wall clock counts the time other work held the core, which is not the signer's. Short
rounds alternate between the two, so each signer round has a baseline round next to it under
the same load; the ratio is the median of those pairs' ratios, the rates the medians of the
rounds. Printed: messages signed per CPU-second of each and signer / baseline (issue 10 asks
for >= 0.8), not asserted.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

from penguinmails.bench.baselines import bare_signer
from penguinmails.bench.sending import BODY
from penguinmails.common.db.ledger import CampaignPlan, Relay
from penguinmails.common.dkim.keys import generate_private_key
from penguinmails.common.dkim.signer import DkimSigner
from penguinmails.sender.render import MessageParts, Renderer

ROUNDS = 41
PER_ROUND = 50


def sample_message() -> bytes:
    """A message as the sender renders it (headers, text part, footer, unsubscribe pair)."""
    plan = CampaignPlan(
        from_address="jane@bench.example",
        from_name="Jane Doe",
        subject="Hello {{ first_name }}",
        text="Hi {{ first_name }},\n\n" + BODY,
        domain="bench.example",
        dkim_secret="bench-dkim",  # noqa: S106 (a Secret's name, not a password)
        unsubscribe_url="https://unsubscribe.bench.example/u",
        unsubscribe_mailto="unsubscribe@bench.example",
        postal_address="1 Bench Road, Benchville",
        relays=[Relay(name="sink", host="127.0.0.1", port=25, tls="none")],
    )
    parts = MessageParts(
        delivery_id=1,
        campaign_uid=uuid.uuid4(),
        to="someone@dest.test",
        fields={"first_name": "Sam", "company": "Acme"},
        unsubscribe_token="a" * 56,
        bounce_token="b" * 56,
    )
    return Renderer(plan).render(parts)


def _round(sign: Callable[[bytes], bytes], message: bytes) -> float:
    """CPU seconds to sign the message PER_ROUND times."""
    started = time.process_time()
    for _ in range(PER_ROUND):
        sign(message)
    return time.process_time() - started


def measure() -> tuple[float, float, float]:
    """Messages signed per CPU-second (each: RSA-2048 + Ed25519) by the signer and by the
    baseline, and signer / baseline."""
    rsa_pem, ed_pem = generate_private_key("rsa2048"), generate_private_key("ed25519")
    signer = DkimSigner("bench.example", [("rsa1", rsa_pem), ("ed1", ed_pem)])
    baseline = bare_signer(rsa_pem, ed_pem)
    message = sample_message()
    pairs = [(_round(signer.sign, message), _round(baseline, message)) for _ in range(ROUNDS)]
    ours = statistics.median(t for t, _ in pairs)
    bare = statistics.median(t for _, t in pairs)
    ratio = statistics.median(b / t for t, b in pairs)
    return PER_ROUND / ours, PER_ROUND / bare, ratio


def run() -> None:
    ours, bare, ratio = measure()
    print(f"signing: RSA-2048 + Ed25519 per message, ~5 KB, {ROUNDS} x {PER_ROUND} each, medians")
    print(f"  sender's DkimSigner.sign():                         {ours:8.0f} msg/CPU-s")
    print(f"  baseline (body hash + 2 cryptography signatures):   {bare:8.0f} msg/CPU-s")
    print(f"  signer / baseline = {ratio:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    run()
