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
