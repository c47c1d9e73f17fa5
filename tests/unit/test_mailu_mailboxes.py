"""The decide part of the MailU conversation setup (operator/mailu/mailboxes.py): pure."""

from __future__ import annotations

import uuid
from typing import Any

from penguinmails.api.v1alpha1.sendingdomain import SendingDomainSpec
from penguinmails.common.keys import MasterKeys
from penguinmails.common.suppression import TokenPurpose, read_token, reply_address
from penguinmails.operator.mailu.mailboxes import (
    MARK,
    RECHECK_SECONDS,
    Found,
    Synced,
    Wanted,
    WantedUser,
    changes,
    mailu_digest,
    secret_key,
    wanted_state,
)

KEYS = MasterKeys.parse("1:" + "k" * 32)
TENANT = uuid.UUID("00000000-0000-0000-0000-0000000000aa")
INTAKE = "intake.platform.example:2525"


def spec(domain: str, servers: list[str], mailboxes: list[str], **extra: Any) -> SendingDomainSpec:
    return SendingDomainSpec.model_validate(
        {
            "domain": domain,
            "dnsProvider": {"type": "manual"},
            "smtpServerRefs": [{"name": s} for s in servers],
            "mailboxes": [{"localPart": m} for m in mailboxes],
            **extra,
        }
    )


def reply_to(domain: str) -> str:
    return reply_address(KEYS.token_key(TENANT), TENANT, domain)


def test_wanted_state_holds_the_referencing_domains_their_mailboxes_forwards_and_relays() -> None:
    domains = [
        ("acme", spec("acme.example", ["mx1"], ["Jane", "bob"])),
        ("beta", spec("beta.example", ["mx1", "mx2"], ["sam"], returnPath={"subdomain": "rp"})),
        ("other", spec("other.example", ["mx2"], ["eve"])),
    ]
    wanted = wanted_state("mx1", domains, intake_host=INTAKE, reply_to=reply_to)
    assert wanted.domains == ("acme.example", "beta.example")
    assert wanted.relays == {"bounces.acme.example": INTAKE, "rp.beta.example": INTAKE}
    assert [u.email for u in wanted.users] == [
        "jane@acme.example",
        "bob@acme.example",
        "sam@beta.example",
    ]
    forward = wanted.users[0].forward_to
    assert forward is not None and forward.endswith("@bounces.acme.example")
    # The address the intake accepts: a reply token naming this tenant only.
    token = forward.split("@")[0].removeprefix("replies+")
    assert read_token(KEYS, TokenPurpose.REPLY, token) == (TENANT, 0)
    assert wanted.users[0].fields() == {
        "comment": MARK,
        "forward_enabled": True,
        "forward_destination": [forward],
        "forward_keep": True,
    }
    assert wanted.problems == ()


def test_without_the_intake_or_a_reply_address_mailboxes_are_made_and_the_fix_is_named() -> None:
    domains = [("acme", spec("acme.example", ["mx1"], ["jane"]))]
    no_intake = wanted_state("mx1", domains, intake_host="", reply_to=reply_to)
    assert no_intake.relays == {} and no_intake.users[0].forward_to is None
    assert "PM_INTAKE_HOST" in no_intake.problems[0]
    assert no_intake.users[0].fields()["forward_enabled"] is False
    no_key = wanted_state(
        "mx1", domains, intake_host=INTAKE, reply_to=None, reply_problem="set PM_SENDER_SECRET"
    )
    assert no_key.relays == {"bounces.acme.example": INTAKE}
    assert no_key.users[0].forward_to is None and no_key.problems == ("set PM_SENDER_SECRET",)
    nothing = wanted_state("mx9", domains, intake_host="", reply_to=None)
    assert nothing == Wanted()


def test_changes_create_what_is_missing_and_fix_a_forward() -> None:
    wanted = wanted_state(
        "mx1", [("a", spec("acme.example", ["mx1"], ["jane", "bob"]))],
        intake_host=INTAKE, reply_to=reply_to,
    )  # fmt: skip
    jane = wanted.users[0]
    found = Found(
        domains={"acme.example": {"name": "acme.example", "comment": MARK}},
        users={
            "jane@acme.example": {
                "email": "jane@acme.example",
                "comment": MARK,
                "forward_enabled": True,
                "forward_destination": ["old@elsewhere.example"],
                "forward_keep": True,
            }
        },
    )
    todo = changes(wanted, found)
    assert todo.create_domains == ()
    assert todo.create_relays == {"bounces.acme.example": INTAKE}
    assert [u.email for u in todo.create_users] == ["bob@acme.example"]
    assert todo.update_users == {"jane@acme.example": jane.fields()}
    assert todo.delete_users == todo.delete_domains == todo.delete_relays == ()


def test_changes_are_empty_once_mailu_holds_everything() -> None:
    wanted = wanted_state(
        "mx1", [("a", spec("acme.example", ["mx1"], ["jane"]))],
        intake_host=INTAKE, reply_to=reply_to,
    )  # fmt: skip
    user = wanted.users[0]
    found = Found(
        domains={"acme.example": {"comment": MARK}},
        users={user.email: {"email": user.email, **user.fields()}},
        relays={"bounces.acme.example": {"smtp": INTAKE, "comment": MARK}},
    )
    assert changes(wanted, found).empty()
    # A password generated again (its Secret was deleted) is set on the existing user.
    reset = changes(wanted, found, frozenset({user.email}))
    assert reset.reset_passwords == (user.email,) and not reset.update_users


def test_removal_touches_only_what_carries_the_mark() -> None:
    wanted = wanted_state(
        "mx1", [("a", spec("acme.example", ["mx1"], ["jane"]))],
        intake_host=INTAKE, reply_to=reply_to,
    )  # fmt: skip
    found = Found(
        domains={
            "acme.example": {"comment": MARK},
            "gone.example": {"comment": MARK},
            "mail.example": {},  # the server's own domain (install.py): not ours to remove
        },
        users={
            "jane@acme.example": {"comment": MARK, **wanted.users[0].fields()},
            "bob@acme.example": {"comment": MARK},
            "relay@mail.example": {},
            "boss@acme.example": {"comment": "made by hand"},
        },
        relays={
            "bounces.acme.example": {"smtp": "old.intake:25", "comment": MARK},
            "bounces.gone.example": {"smtp": INTAKE, "comment": MARK},
            "partner.example": {"smtp": "x"},
        },
    )
    todo = changes(wanted, found)
    assert todo.delete_users == ("bob@acme.example",)
    assert todo.delete_domains == ("gone.example",)
    assert todo.delete_relays == ("bounces.gone.example",)
    assert todo.update_relays == {"bounces.acme.example": INTAKE}
    # A wanted name someone else made is left alone and reported.
    conflicting = Found(users={"jane@acme.example": {"comment": "made by hand"}})
    other = changes(wanted, conflicting)
    assert other.conflicts == ("user jane@acme.example",)
    assert not other.create_users and not other.update_users


def test_secret_keys_are_valid_and_distinct() -> None:
    assert secret_key("jane@acme.example") == "jane_at_acme.example"
    assert secret_key("j+x@acme.example") == "j_x2b_x_at_acme.example"
    assert secret_key("j.x@acme.example") != secret_key("j_x@acme.example")


def test_digest_follows_what_mailu_depends_on_only() -> None:
    base = {"domain": "acme.example", "mailboxes": [{"localPart": "jane", "dailyLimit": 50}]}
    same = {**base, "mailboxes": [{"localPart": "jane", "dailyLimit": 80}], "spf": {}}
    assert mailu_digest(base) == mailu_digest(same)
    assert mailu_digest(base) != mailu_digest({**base, "mailboxes": []})


def test_wanted_user_without_forward() -> None:
    assert WantedUser("a@b.example", None).fields()["forward_destination"] == []


def test_a_complete_set_up_is_trusted_until_what_is_wanted_changes_or_an_hour_passes() -> None:
    synced, wanted = Synced(), Wanted(domains=("acme.example",))
    assert not synced.fresh("uid-1", wanted, 0.0)  # never set up
    synced.last["uid-1"] = (wanted, 100.0)
    assert synced.fresh("uid-1", wanted, 100.0 + RECHECK_SECONDS - 1)
    assert not synced.fresh("uid-1", wanted, 100.0 + RECHECK_SECONDS)
    assert not synced.fresh("uid-1", Wanted(domains=("other.example",)), 101.0)
    assert not synced.fresh("uid-2", wanted, 101.0)
    synced.forget("uid-1")
    assert not synced.fresh("uid-1", wanted, 101.0)
