"""The DKIM rotation state machine, as one pure function of the key set, the clock and DNS.

Per algorithm, one step at a time (each call advances what is due and returns the new set):

1. no Active and no Pending key, or the Active key is older than rotate_after, or a rotate-now
   token was seen: generate a Pending key under a new dated selector (it gets published);
2. a Pending key whose record every authoritative nameserver serves: note `verified_at`; one TTL
   later it becomes Active, and the previous Active key becomes Retiring until now + retire_after
   (so resolvers that cached "no such selector" have forgotten before we sign with it);
3. a Retiring key past retire_at: Revoked (empty p= published, private key deleted);
4. a Revoked key one more retire_after later: dropped, its record removed.

Signing uses only Active keys, and a key is Active only while its record is verified and after it
has been for a TTL: signing and DNS never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from penguinmails.common.dkim.keys import (
    DkimKey,
    KeySet,
    KeyState,
    generate_private_key,
    new_key,
    revoke,
)


@dataclass(frozen=True)
class RotationPolicy:
    algorithms: tuple[str, ...]
    selector_prefix: str
    rotate_after: timedelta
    retire_after: timedelta
    ttl: timedelta


@dataclass(frozen=True)
class Step:
    """Something that happened, for an event: reason and message."""

    reason: str
    message: str


def advance(
    key_set: KeySet,
    policy: RotationPolicy,
    *,
    now: datetime,
    verified: Collection[str],
    rotate_token: str | None = None,
    generate: Callable[[str], bytes] = generate_private_key,
) -> tuple[KeySet, list[Step]]:
    """Advance the rotation; `verified` are selectors whose record every nameserver serves;
    `generate` makes a new key's private key by algorithm."""
    keys = list(key_set.keys)
    steps: list[Step] = []
    rotate_now = rotate_token is not None and rotate_token != key_set.rotate_token
    taken = {key.selector for key in keys}

    # Algorithms no longer configured: stop signing with them, keep them published for a while.
    for i, key in enumerate(keys):
        if key.algorithm in policy.algorithms:
            continue
        if key.state in (KeyState.ACTIVE, KeyState.PENDING):
            keys[i] = replace(key, state=KeyState.RETIRING, retire_at=now + policy.retire_after)
            steps.append(Step("DKIMKeyRetiring", f"{key.selector}: algorithm no longer configured"))

    for algorithm in policy.algorithms:
        mine = [k for k in keys if k.algorithm == algorithm]
        active = next((k for k in mine if k.state == KeyState.ACTIVE), None)
        pending = next((k for k in mine if k.state == KeyState.PENDING), None)

        if pending is not None and pending.selector in verified:
            if pending.verified_at is None:
                pending = _swap(keys, pending, replace(pending, verified_at=now))
            if now - pending.verified_at >= policy.ttl:  # type: ignore[operator]
                if active is not None:
                    _swap(
                        keys,
                        active,
                        replace(
                            active, state=KeyState.RETIRING, retire_at=now + policy.retire_after
                        ),
                    )
                    steps.append(
                        Step(
                            "DKIMKeyRotated",
                            f"signing with {pending.selector} instead of {active.selector}",
                        )
                    )
                else:
                    steps.append(Step("DKIMKeyActive", f"signing with {pending.selector}"))
                active = _swap(
                    keys, pending, replace(pending, state=KeyState.ACTIVE, activated_at=now)
                )
                pending = None

        due = active is None or now - active.created_at >= policy.rotate_after or rotate_now
        if pending is None and due:
            created = new_key(policy.selector_prefix, algorithm, now, taken, generate)
            taken.add(created.selector)
            keys.append(created)
            why = "first key" if active is None else "rotation"
            steps.append(
                Step("DKIMKeyGenerated", f"{created.selector} ({algorithm}, {why}) published")
            )

    for i, key in enumerate(keys):
        if key.state == KeyState.RETIRING and key.retire_at is not None and now >= key.retire_at:
            keys[i] = replace(revoke(key), retire_at=now + policy.retire_after)
            steps.append(Step("DKIMKeyRevoked", f"{key.selector} revoked (empty p=)"))
    kept = [
        k
        for k in keys
        if not (k.state == KeyState.REVOKED and k.retire_at is not None and now >= k.retire_at)
    ]
    for gone in _missing(keys, kept):
        steps.append(Step("DKIMKeyRemoved", f"{gone.selector} record removed"))

    token = rotate_token if rotate_token is not None else key_set.rotate_token
    return KeySet(tuple(kept), token), steps


def algorithms_to_generate(
    key_set: KeySet,
    policy: RotationPolicy,
    *,
    now: datetime,
    verified: Collection[str],
    rotate_token: str | None = None,
) -> list[str]:
    """The algorithms whose new key `advance` with the same arguments generates (at most one
    key each), so that the caller can get the keys first (awaiting them off its thread) and
    then advance with them."""
    wanted: list[str] = []

    def note(algorithm: str) -> bytes:
        wanted.append(algorithm)
        return b""

    advance(key_set, policy, now=now, verified=verified, rotate_token=rotate_token, generate=note)
    return wanted


def _swap(keys: list[DkimKey], old: DkimKey, new: DkimKey) -> DkimKey:
    keys[keys.index(old)] = new
    return new


def _missing(before: Iterable[DkimKey], after: Iterable[DkimKey]) -> list[DkimKey]:
    remaining = {k.selector for k in after}
    return [k for k in before if k.selector not in remaining]


def next_due(key_set: KeySet, policy: RotationPolicy) -> datetime | None:
    """When the next rotation of an Active key is due (for status.dkim.nextRotation)."""
    created = [k.created_at for k in key_set.keys if k.state == KeyState.ACTIVE]
    return min(created) + policy.rotate_after if created else None
