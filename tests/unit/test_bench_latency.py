"""The latency bench reports the operator's own timing of each rotation."""

from __future__ import annotations

from penguinmails.bench.latency import rotation_timings

LOG = """\
2026-12-02 10:27:00,100 INFO kopf.objects SendingDomain main: change waited 2.31 s for the object's lock, 0.00 s for a slot
2026-12-02 10:27:00,200 INFO kopf.objects Tenant t-1: change waited 0.50 s for the object's lock, 0.00 s for a slot
2026-12-02 10:27:01,291 INFO kopf.objects SendingDomain main: rotation (penguinmails.io/rotate-dkim=first) stored (read 0.00 s, generated 0.01 s, written 0.04 s)
2026-12-02 10:27:02,000 INFO kopf.objects SendingDomain d-0001: first keys stored (read 0.46 s, generated 0.03 s, written 0.04 s)
2026-12-02 10:27:03,000 INFO kopf.objects Timer 'sendingdomains-resync' succeeded.
"""  # noqa: E501


def test_only_rotation_lines_are_reported_without_their_log_prefix() -> None:
    assert rotation_timings(LOG) == [
        "main: change waited 2.31 s for the object's lock, 0.00 s for a slot",
        "main: rotation (penguinmails.io/rotate-dkim=first) stored "
        "(read 0.00 s, generated 0.01 s, written 0.04 s)",
    ]
