"""Marks the SendingDomain and SmtpServers a sending Campaign uses, so they cannot be deleted.

The chart's inuse-guard ValidatingAdmissionPolicy refuses the DELETE of an object carrying an
`inuse.penguinmails.io/<campaign>` label (CEL cannot look Campaigns up, so the controller keeps
the labels). One label per campaign, not a count: several campaigns may share a domain, and each
adds or removes only its own key with a merge patch, so two campaigns never race on one value.
Only objects in the campaign's own namespace are marked: the platform's shared pool is not
(a campaign name is unique only within its namespace).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from penguinmails.operator import tenant_resources as res
from penguinmails.operator.context import Context

LABEL_PREFIX = "inuse.penguinmails.io/"
KINDS = ("SendingDomain", "SmtpServer")
_NAME_MAX = 63  # a label key's name part


def label_key(campaign: str) -> str:
    """The label for `campaign`; a name longer than a label key allows is shortened with a hash
    of the whole name, so it stays unique."""
    if len(campaign) <= _NAME_MAX:
        return LABEL_PREFIX + campaign
    digest = hashlib.sha256(campaign.encode()).hexdigest()[:8]
    return f"{LABEL_PREFIX}{campaign[: _NAME_MAX - 9]}-{digest}"


async def mark_in_use(
    ctx: Context, namespace: str, campaign: str, used: Collection[tuple[str, str]]
) -> None:
    """Make `campaign`'s label be on exactly the (kind, name) objects in `used` in `namespace`:
    level-based, so a changed spec, a completed or deleted campaign all release what it no longer
    uses."""
    key = label_key(campaign)
    for kind in KINDS:
        for obj in await ctx.kube.list(res.TENANT_API_VERSION, kind, namespace):
            name = str(obj["metadata"]["name"])
            wanted = (kind, name) in used
            labelled = key in (obj["metadata"].get("labels") or {})
            if wanted != labelled:
                value = "true" if wanted else None
                patch = {"metadata": {"labels": {key: value}}}
                await ctx.kube.merge_patch(res.TENANT_API_VERSION, kind, name, patch, namespace)
