"""Invitation e-mails from the API process: whether they can be sent (a relay and the master
key configured), and the background pass that sends the ones still owed
(common/db/invitation_emails.py): at start, then every PM_API_MAIL_RETRY_SECONDS. A new
invitation's e-mail is sent at once by its request; this pass is for the relay that was down
and the replica that died in between."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg

from penguinmails.common.db.invitation_emails import InvitationMail, send_owed
from penguinmails.common.keys import MasterKeys
from penguinmails.common.settings import ApiSettings

__all__ = ["configured", "retrying"]

log = logging.getLogger(__name__)


def configured(settings: ApiSettings) -> InvitationMail | str:
    """What sends invitation e-mails, or why none are sent (said in the invitation's answer)."""
    if not settings.relay.enabled:
        return (
            "No mail relay is configured (PM_NOTICE_SMTP_HOST): the invitation was not e-mailed. "
            "Send the token to the invitee yourself; it is shown this once."
        )
    try:
        keys = MasterKeys.from_env()
    except ValueError:
        return (
            "The platform's master key (PM_SUPPRESSION_KEY) is not set, which invitation "
            "e-mails need: the invitation was not e-mailed. Send the token to the invitee "
            "yourself; it is shown this once."
        )
    return InvitationMail(settings.relay, keys, settings.invitation_url)


@contextlib.asynccontextmanager
async def retrying(pool: asyncpg.Pool, settings: ApiSettings) -> AsyncIterator[None]:
    """The background pass while the app runs (nothing when e-mail is not configured)."""
    mail = configured(settings)
    if isinstance(mail, str):
        yield
        return

    async def loop(mail: InvitationMail) -> None:
        while True:
            try:
                await send_owed(pool, mail)
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("owed invitation e-mails not sent this pass: %s", error)
            await asyncio.sleep(settings.mail_retry_seconds)

    task = asyncio.create_task(loop(mail), name="invitation-emails")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
