"""The MailU admin API client against a stand-in following the documented contract."""

from __future__ import annotations

import pytest

from penguinmails.operator.mailu.admin_api import MailuAdmin, MailuAdminError
from tests.standins.mailu import MailuAdminStandIn

TOKEN = "admin-token"


async def test_domain_user_and_dkim_are_created_once() -> None:
    with MailuAdminStandIn(TOKEN) as mailu:
        admin = MailuAdmin(mailu.url, TOKEN)
        for _ in range(2):  # idempotent: the second pass only reads
            await admin.ensure_domain("mail.example.com")
            await admin.ensure_user("relay@mail.example.com", "pw-1")
        assert list(mailu.domains) == ["mail.example.com"]
        assert mailu.users["relay@mail.example.com"]["_password"] == "pw-1"
        posts = [path for method, path in mailu.requests if method == "POST"]
        assert posts == ["/api/v1/domain", "/api/v1/user"]
        record = await admin.dkim_record("mail.example.com")
        assert record is not None and "v=DKIM1" in record
        assert await admin.dkim_record("mail.example.com") == record  # not regenerated
        await admin.aclose()


async def test_wrong_token_says_which_secret_to_compare() -> None:
    with MailuAdminStandIn(TOKEN) as mailu:
        admin = MailuAdmin(mailu.url, "wrong")
        with pytest.raises(MailuAdminError, match="403") as raised:
            await admin.ensure_domain("mail.example.com")
        assert "wrong" not in str(raised.value) and "-mailu Secret" in str(raised.value)
        await admin.aclose()


async def test_unreachable_api_is_an_error_not_a_crash() -> None:
    admin = MailuAdmin("http://127.0.0.1:9/api/v1", TOKEN, timeout=1)
    with pytest.raises(MailuAdminError, match="unreachable"):
        await admin.ensure_domain("mail.example.com")
    await admin.aclose()


async def test_users_relays_and_domains_follow_the_contract_and_its_errors() -> None:
    with MailuAdminStandIn(TOKEN) as mailu:
        admin = MailuAdmin(mailu.url, TOKEN)
        # A user of a domain MailU does not hold: 404 with MailU's message, no password in it.
        with pytest.raises(MailuAdminError, match=r"HTTP 404 Domain acme\.example does not") as e:
            await admin.create_user("jane@acme.example", "s3cret-pw", {})
        assert "s3cret-pw" not in str(e.value)
        await admin.create_domain("acme.example", "ours")
        forward = {"forward_enabled": True, "forward_destination": ["r@x.example"]}
        await admin.create_user("jane@acme.example", "s3cret-pw", {"forward_keep": True, **forward})
        with pytest.raises(MailuAdminError, match="HTTP 409"):
            await admin.create_user("jane@acme.example", "s3cret-pw", {})
        (user,) = await admin.list_users()
        assert user["forward_destination"] == ["r@x.example"] and "_password" not in user
        await admin.update_user("jane@acme.example", {"forward_keep": False})
        assert mailu.users["jane@acme.example"]["forward_keep"] is False
        await admin.create_relay("bounces.acme.example", "intake.example:2525", "ours")
        # A relayed domain's name is in use like a domain's.
        with pytest.raises(MailuAdminError, match="HTTP 409 Duplicate domain"):
            await admin.create_relay("acme.example", "x", "ours")
        await admin.update_relay("bounces.acme.example", "intake2.example")
        assert (await admin.list_relays())[0]["smtp"] == "intake2.example"
        # Deleting what is gone already is done (a pass killed after the call repeats it).
        for _ in range(2):
            await admin.delete_user("jane@acme.example")
            await admin.delete_relay("bounces.acme.example")
            await admin.delete_domain("acme.example")
        assert not mailu.users and not mailu.relays and not mailu.domains
        # A server error is reported with its status and MailU's message.
        mailu.failures[("GET", "/user")] = (500, "database is locked")
        with pytest.raises(MailuAdminError, match="listing users: HTTP 500 database is locked"):
            await admin.list_users()
        await admin.aclose()
