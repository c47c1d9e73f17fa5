"""The conversation on a MailU server the platform runs: sending domains, mailboxes, reply copies
and bounces to the intake, set up through MailU's admin API (``/api/v1``).

For each SendingDomain of the namespace that references the SmtpServer, MailU gets:

- the domain (``/domain``), so the contacts' replies that the published MX brings are accepted;
- one user per ``spec.mailboxes`` localPart (``/user``), its password generated once and kept in
  the Secret ``<server>-mailboxes`` (the customer's IMAP login), its forward keeping a copy
  (``forward_enabled``, ``forward_keep``) to the tenant's reply address at the return-path domain
  (``reply_address()``, common/suppression.py), so the intake records replies;
- the return-path domain ``<returnPath.subdomain>.<domain>`` as a relayed domain (``/relay``)
  to the platform's intake (PM_INTAKE_HOST): receivers' DSNs to ``bounces+<token>@`` and the
  reply copies reach it. MailU routes a relayed domain by its transport, not by DNS, so the
  copies arrive even where the return-path records are not published.

Everything created carries the comment ``MARK``; only marked domains, users and relays are ever
changed or removed (the server's own domain and its ``relay@`` user, made by install.py, are not
marked). ``wanted_state`` and ``changes`` are pure; ``sync`` observes and acts, idempotently: a
pass killed at any point is finished by the next one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets as random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from penguinmails.api.v1alpha1 import API_GROUP, API_VERSION
from penguinmails.api.v1alpha1.sendingdomain import SendingDomainSpec
from penguinmails.common.keys import MASTER_KEYS_ENV, MasterKeys
from penguinmails.common.suppression import reply_address
from penguinmails.operator import receiver_block
from penguinmails.operator.context import Context
from penguinmails.operator.kube import controller_reference
from penguinmails.operator.mailu.admin_api import MailuAdmin
from penguinmails.operator.mailu.install import ensure_mailu_secrets
from penguinmails.operator.mailu.manifests import COMPONENT_PORTS, Owner
from penguinmails.operator.secret_access import apply_secret

MARK = "managed by penguinmails"
"""The comment on every domain, user and relay this module made: what it may change or remove."""


def secret_name(server: str) -> str:
    """The Secret with the mailboxes' passwords (IMAP/SMTP login: the address)."""
    return f"{server}-mailboxes"


_KEY_UNSAFE = re.compile(r"[^-.A-Za-z0-9]")


def secret_key(address: str) -> str:
    """The Secret key of an address: ``jane@acme.example`` → ``jane_at_acme.example`` (a
    Secret key allows only ``-._`` and alphanumerics; any other local-part character becomes
    ``_xNN_``, its code)."""
    local, _, domain = address.rpartition("@")
    safe = _KEY_UNSAFE.sub(lambda m: f"_x{ord(m.group()):02x}_", local)
    return f"{safe}_at_{domain}"


def return_path_domain(spec: SendingDomainSpec) -> str:
    return f"{spec.return_path.subdomain}.{spec.domain}"


# ----------------------------------------------------------------------------------------------
# Decide (pure)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WantedUser:
    email: str
    forward_to: str | None
    """The reply address the user's forward copies to; None: no forward (nothing receives it)."""

    def fields(self) -> dict[str, Any]:
        """MailU's user fields for the forward (``forward_destination`` is a list in v1)."""
        return {
            "comment": MARK,
            "forward_enabled": self.forward_to is not None,
            "forward_destination": [self.forward_to] if self.forward_to else [],
            "forward_keep": True,  # the customer's mailbox keeps every reply
        }


@dataclass(frozen=True)
class Wanted:
    domains: tuple[str, ...] = ()
    users: tuple[WantedUser, ...] = ()
    relays: Mapping[str, str] = field(default_factory=dict)
    """Relayed domain → MailU's ``smtp`` (the intake)."""
    problems: tuple[str, ...] = ()
    """What keeps the conversation from reaching the intake, each with its fix."""


def wanted_state(
    server: str,
    domains: Sequence[tuple[str, SendingDomainSpec]],
    *,
    intake_host: str,
    reply_to: Callable[[str], str] | None,
    reply_problem: str = "",
) -> Wanted:
    """What MailU should hold for the SendingDomains (name, spec) of the namespace that
    reference ``server``. ``reply_to`` makes the tenant's reply address at a domain (None when
    it cannot be made: ``reply_problem`` says why)."""
    wanted_domains: list[str] = []
    users: list[WantedUser] = []
    relays: dict[str, str] = {}
    problems: list[str] = []
    for _name, spec in sorted(domains, key=lambda item: item[0]):
        if server not in {ref.name for ref in spec.smtp_server_refs}:
            continue
        domain = spec.domain.lower()
        bounce = return_path_domain(spec).lower()
        wanted_domains.append(domain)
        forward = None
        if intake_host:
            relays[bounce] = intake_host
            if reply_to is not None:
                forward = reply_to(bounce)
        for mailbox in spec.mailboxes:
            users.append(WantedUser(f"{mailbox.local_part}@{domain}".lower(), forward))
    if wanted_domains and not intake_host:
        problems.append(
            "PM_INTAKE_HOST is not set on the operator: bounces and reply copies cannot be "
            "relayed to the intake; set it to the intake's host[:port]"
        )
    elif users and reply_to is None:
        problems.append(reply_problem or "the tenant's reply address cannot be made")
    return Wanted(tuple(dict.fromkeys(wanted_domains)), tuple(users), relays, tuple(problems))


@dataclass(frozen=True)
class Found:
    """What MailU holds: by name, the object as listed (``comment`` marks ours)."""

    domains: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    users: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    relays: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _ours(item: Mapping[str, Any]) -> bool:
    return item.get("comment") == MARK


@dataclass(frozen=True)
class Changes:
    create_domains: tuple[str, ...] = ()
    create_relays: Mapping[str, str] = field(default_factory=dict)
    update_relays: Mapping[str, str] = field(default_factory=dict)
    create_users: tuple[WantedUser, ...] = ()
    update_users: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """email → fields to patch (never holding a password: ``reset_passwords`` says whose)."""
    reset_passwords: tuple[str, ...] = ()
    delete_users: tuple[str, ...] = ()
    delete_relays: tuple[str, ...] = ()
    delete_domains: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    """Names wanted that exist without our mark: left alone, reported."""

    def empty(self) -> bool:
        return not any(
            (
                self.create_domains,
                self.create_relays,
                self.update_relays,
                self.create_users,
                self.update_users,
                self.reset_passwords,
                self.delete_users,
                self.delete_relays,
                self.delete_domains,
            )
        )


def _forward_of(user: Mapping[str, Any]) -> tuple[bool, tuple[str, ...], bool]:
    destination = user.get("forward_destination") or []
    if isinstance(destination, str):
        destination = [d for d in destination.split(",") if d]
    return (
        bool(user.get("forward_enabled")),
        tuple(str(d).lower() for d in destination),
        bool(user.get("forward_keep")),
    )


def changes(wanted: Wanted, found: Found, new_passwords: frozenset[str] = frozenset()) -> Changes:
    """The calls that take MailU from ``found`` to ``wanted``; ``new_passwords`` are addresses
    whose password was generated this pass (a user that exists gets it set)."""
    conflicts: list[str] = []
    create_domains = tuple(d for d in wanted.domains if d not in found.domains)
    create_relays: dict[str, str] = {}
    update_relays: dict[str, str] = {}
    for name, smtp in wanted.relays.items():
        relay = found.relays.get(name)
        if relay is None:
            create_relays[name] = smtp
        elif not _ours(relay):
            conflicts.append(f"relayed domain {name}")
        elif relay.get("smtp") != smtp:
            update_relays[name] = smtp
    create_users: list[WantedUser] = []
    update_users: dict[str, dict[str, Any]] = {}
    reset: list[str] = []
    for user in wanted.users:
        existing = found.users.get(user.email)
        if existing is None:
            create_users.append(user)
            continue
        if not _ours(existing):
            conflicts.append(f"user {user.email}")
            continue
        want = user.fields()
        if _forward_of(existing) != _forward_of(want):
            update_users[user.email] = want
        if user.email in new_passwords:
            reset.append(user.email)
    emails = {u.email for u in wanted.users}
    return Changes(
        create_domains=create_domains,
        create_relays=create_relays,
        update_relays=update_relays,
        create_users=tuple(create_users),
        update_users=update_users,
        reset_passwords=tuple(reset),
        delete_users=tuple(
            sorted(e for e, u in found.users.items() if _ours(u) and e not in emails)
        ),
        delete_relays=tuple(
            sorted(n for n, r in found.relays.items() if _ours(r) and n not in wanted.relays)
        ),
        delete_domains=tuple(
            sorted(n for n, d in found.domains.items() if _ours(d) and n not in wanted.domains)
        ),
        conflicts=tuple(conflicts),
    )


# ----------------------------------------------------------------------------------------------
# Act
# ----------------------------------------------------------------------------------------------


def _by(items: Sequence[Mapping[str, Any]], key: str) -> dict[str, Mapping[str, Any]]:
    return {str(item[key]).lower(): item for item in items if item.get(key)}


async def observe(admin: MailuAdmin) -> Found:
    return Found(
        domains=_by(await admin.list_domains(), "name"),
        users=_by(await admin.list_users(), "email"),
        relays=_by(await admin.list_relays(), "name"),
    )


def _secret(namespace: str, server: str, uid: str, passwords: dict[str, str]) -> dict[str, Any]:
    # Every key each time: with server-side apply, a key left out (a mailbox gone) is removed.
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name(server),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "penguinmails"},
            "annotations": {
                "penguinmails.io/mailboxes": "IMAP/SMTP logins on the SmtpServer's MailU: the "
                "key is the address with @ written _at_, the value its password"
            },
            "ownerReferences": [controller_reference("SmtpServer", server, uid)],
        },
        "type": "Opaque",
        # data, not stringData: server-side apply tracks data's keys as ours, so a key left
        # out is removed (stringData is merged into data and never owned).
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in passwords.items()},
    }


async def _passwords(
    ctx: Context, namespace: str, server: str, uid: str, emails: Sequence[str]
) -> tuple[dict[str, str], frozenset[str]]:
    """email → password, generated once and kept in the Secret (written before MailU is told,
    so a password MailU holds is never lost); and the addresses generated now."""
    existing = await ctx.kube.get("v1", "Secret", secret_name(server), namespace)
    data = (existing or {}).get("data") or {}
    passwords: dict[str, str] = {}
    generated: set[str] = set()
    for email in emails:
        stored = data.get(secret_key(email))
        if stored:
            passwords[email] = base64.b64decode(stored).decode()
        else:
            passwords[email] = random.token_urlsafe(18)
            generated.add(email)
    keys = {secret_key(e): p for e, p in passwords.items()}
    if (existing is None and keys) or (existing is not None and set(data) != set(keys)):
        await apply_secret(ctx.kube, _secret(namespace, server, uid, keys))
    return passwords, frozenset(generated)


@dataclass(frozen=True)
class Outcome:
    wanted: Wanted
    done: Changes
    secret: str

    def message(self) -> str:
        domains, users = len(self.wanted.domains), len(self.wanted.users)
        text = f"{users} mailbox(es) on {domains} domain(s)"
        if self.wanted.relays:
            text += f"; {', '.join(sorted(self.wanted.relays))} relayed to the intake"
        if any(u.forward_to for u in self.wanted.users):
            text += "; every mailbox keeps its mail and copies it to the tenant's reply address"
        if users:
            text += f"; their logins are in the Secret {self.secret}"
        notes = list(self.wanted.problems)
        if self.done.conflicts:
            notes.append(
                f"exists on MailU without the comment {MARK!r}, left alone: "
                + ", ".join(self.done.conflicts)
                + "; delete it on MailU to let the operator manage it"
            )
        return "; ".join([text, *notes])

    @property
    def complete(self) -> bool:
        return not self.wanted.problems and not self.done.conflicts


async def sync(
    ctx: Context, admin: MailuAdmin, *, namespace: str, server: str, uid: str, wanted: Wanted
) -> Outcome:
    """Make MailU hold ``wanted`` (and nothing else of ours); raises MailuAdminError."""
    found = await observe(admin)
    # A user someone else made keeps its own password: no login of ours for it.
    emails = [u.email for u in wanted.users if _ours(found.users.get(u.email) or {"comment": MARK})]
    passwords, generated = await _passwords(ctx, namespace, server, uid, emails)
    todo = changes(wanted, found, generated)
    # Order: what others depend on first (domain before its users), removals last.
    for domain in todo.create_domains:
        await admin.create_domain(domain, MARK)
    for name, smtp in todo.create_relays.items():
        await admin.create_relay(name, smtp, MARK)
    for name, smtp in todo.update_relays.items():
        await admin.update_relay(name, smtp)
    for user in todo.create_users:
        await admin.create_user(user.email, passwords[user.email], user.fields())
    for email, fields in todo.update_users.items():
        await admin.update_user(email, fields)
    for email in todo.reset_passwords:
        # The Secret lost it (deleted by someone): the new one in the Secret is the login.
        await admin.update_user(email, {"raw_password": passwords[email]})
    for email in todo.delete_users:
        await admin.delete_user(email)
    for name in todo.delete_relays:
        await admin.delete_relay(name)
    for name in todo.delete_domains:
        await admin.delete_domain(name)
    return Outcome(wanted, todo, secret_name(server))


# ----------------------------------------------------------------------------------------------
# Observe the namespace: its SendingDomains, the tenant's reply address
# ----------------------------------------------------------------------------------------------

SENDING_DOMAIN_API = "penguinmails.io/v1alpha1"


async def sending_domains(ctx: Context, namespace: str) -> list[tuple[str, SendingDomainSpec]]:
    """The namespace's SendingDomains with a valid spec (an invalid one shows its own
    condition), not being deleted (its mailboxes go now, not after its finalizer)."""
    found = []
    for item in await ctx.kube.list(SENDING_DOMAIN_API, "SendingDomain", namespace):
        metadata = item.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            continue
        try:
            spec = SendingDomainSpec.model_validate(item.get("spec") or {})
        except ValidationError:
            continue
        found.append((str(metadata.get("name")), spec))
    return found


async def reply_maker(ctx: Context, namespace: str) -> tuple[Callable[[str], str] | None, str]:
    """Makes the tenant's reply address at a domain, with the platform's key ring (the Secret
    PM_SENDER_SECRET names, as for the senders' token keys); else None and why."""
    tenant = await receiver_block.tenant_of(ctx, namespace)
    if tenant is None:
        return None, f"namespace {namespace} is not a live tenant's: no reply address to copy to"
    source = ctx.settings.sender_secret
    ns, _, name = source.partition("/")
    secret = await ctx.kube.get("v1", "Secret", name, ns or None) if source else None
    raw = ((secret or {}).get("data") or {}).get(MASTER_KEYS_ENV)
    if not raw:
        return None, (
            f"the operator has no {MASTER_KEYS_ENV} (PM_SENDER_SECRET names a Secret holding "
            "it): reply copies cannot be addressed; set PM_SENDER_SECRET"
        )
    try:
        keys = MasterKeys.parse(base64.b64decode(raw).decode())
    except ValueError as error:  # its message never echoes the key
        return None, f"the Secret {source}: {error}"
    key = keys.token_key(tenant.id)
    return (lambda domain: reply_address(key, tenant.id, domain)), ""


AdminUse = Callable[[MailuAdmin], Awaitable[Outcome]]
OpenAdmin = Callable[[AdminUse], Awaitable[Outcome]]
"""Runs a use of the MailU's admin API (through the SSH tunnel of a VPS, or in the cluster)."""


RECHECK_SECONDS = 3600.0
"""How long a MailU set up completely is trusted to still hold what it was given while
nothing the operator wants of it changed; then it is read again (drift made by hand)."""


@dataclass
class Synced:
    """Per SmtpServer uid, what its MailU was last set up with completely, and when
    (monotonic): a pass whose wanted state is the same opens no SSH connection to the VPS."""

    last: dict[str, tuple[Wanted, float]] = field(default_factory=dict)

    def fresh(self, uid: str, wanted: Wanted, now: float) -> bool:
        found = self.last.get(uid)
        return found is not None and found[0] == wanted and now - found[1] < RECHECK_SECONDS

    def forget(self, uid: str) -> None:
        self.last.pop(uid, None)


async def reconcile(
    ctx: Context,
    *,
    namespace: str,
    server: str,
    uid: str,
    intake_host: str,
    open_admin: OpenAdmin,
    synced: Synced,
    now: float,
) -> Outcome | None:
    """The conversation of every SendingDomain referencing ``server``, set up on its MailU;
    None when MailU already holds it (`synced`): nothing to do, nothing to show anew."""
    domains = await sending_domains(ctx, namespace)
    reply_to, problem = await reply_maker(ctx, namespace)
    wanted = wanted_state(
        server, domains, intake_host=intake_host, reply_to=reply_to, reply_problem=problem
    )
    if synced.fresh(uid, wanted, now):
        return None

    async def use(admin: MailuAdmin) -> Outcome:
        return await sync(ctx, admin, namespace=namespace, server=server, uid=uid, wanted=wanted)

    synced.forget(uid)  # until this sync is known complete
    outcome = await open_admin(use)
    if outcome.complete:
        synced.last[uid] = (wanted, now)
    return outcome


async def use_cluster_admin(ctx: Context, owner: Owner, use: AdminUse) -> Outcome:
    """The admin API of a MailU in the tenant's namespace, at its admin Service (the
    NetworkPolicy lets the operator's namespace reach that port, manifests.py)."""
    secrets = await ensure_mailu_secrets(ctx, owner.namespace, owner.name, owner.uid)
    port = COMPONENT_PORTS["admin"]["http"]
    url = f"http://{owner.prefix}-admin.{owner.namespace}.svc:{port}/api/v1"
    admin = MailuAdmin(url, secrets.api_token)
    try:
        return await use(admin)
    finally:
        await admin.aclose()


# ----------------------------------------------------------------------------------------------
# A SendingDomain's change reaches the SmtpServers it references (and referenced) at once
# ----------------------------------------------------------------------------------------------

NUDGE_ANNOTATION = "penguinmails.io/sending-domain-changed"
"""Set on an SmtpServer when a SendingDomain referencing it changes what MailU must hold: our
annotations are changes for kopf (operator/bookkeeping.py), so its pass runs now, not at the
next timer tick."""


def mailu_digest(spec: Mapping[str, Any]) -> str:
    """What of a SendingDomain's spec its MailU setup depends on."""
    relevant = {
        "domain": spec.get("domain"),
        "mailboxes": sorted(str(m.get("localPart")) for m in spec.get("mailboxes") or []),
        "returnPath": spec.get("returnPath"),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def servers_of(spec: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(str(r["name"]) for r in spec.get("smtpServerRefs") or [] if r.get("name"))


def watch_sending_domains(registry: kopf.OperatorRegistry) -> None:
    """Nudge the SmtpServers a SendingDomain references, and those it no longer does, when the
    domain, its mailboxes or its return path change, or it goes. The first listing after a
    start nudges nothing: every SmtpServer's resume pass sets up everything then."""
    seen: dict[str, tuple[str, frozenset[str]]] = {}

    @kopf.on.event(API_GROUP, API_VERSION, "sendingdomains", registry=registry)
    async def sending_domain_changed(
        *, type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        uid, namespace = str(body.metadata.uid), str(body.metadata.namespace)
        spec = dict(body.get("spec") or {})
        gone = type == "DELETED" or bool(body.metadata.get("deletionTimestamp"))
        digest = "gone" if gone else mailu_digest(spec)
        servers = servers_of(spec)
        previous = seen.pop(uid, None)
        if not gone:
            seen[uid] = (digest, servers)
        if type is None or (previous is not None and previous == (digest, servers)):
            return
        targets = servers | (previous[1] if previous is not None else frozenset())
        for server in sorted(targets):
            nudge = {"metadata": {"annotations": {NUDGE_ANNOTATION: f"{uid}/{digest}"}}}
            found = await memo.context.kube.merge_patch(
                SENDING_DOMAIN_API, "SmtpServer", server, nudge, namespace
            )
            if found:
                logger.info(
                    "SendingDomain %s changed; reconciling SmtpServer %s",
                    body.metadata.name,
                    server,
                )
