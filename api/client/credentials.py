"""Where the CLI keeps its sign-in: `$XDG_CONFIG_HOME/penguinmails/credentials` (else
`~/.config/...`), a JSON file of mode 0600 in a directory of mode 0700.

It holds either a user's tokens (the access token, when it expires, and the refresh token that
renews it) or one API key, with the API's address and the tenant commands act on. The file is
replaced atomically (a new file renamed over it), never rewritten in place, so a reader sees the
old or the new sign-in and never half of one; `refresh_lock()` serialises refreshes between CLI
processes, because a refresh token is valid once and using it twice signs the user out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["Credentials", "credentials_path", "delete", "load", "refresh_lock", "save"]


@dataclass(frozen=True)
class Credentials:
    api_url: str
    tenant: str | None = None
    """The tenant commands act on unless --tenant says otherwise."""
    email: str | None = None
    access_token: str | None = None
    expires_at: float | None = None
    """When the access token expires, in seconds since the epoch (this machine's clock)."""
    refresh_token: str | None = None
    api_key: str | None = None

    @property
    def is_user(self) -> bool:
        return self.refresh_token is not None


def credentials_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "penguinmails" / "credentials"


def load(path: Path) -> Credentials | None:
    """The stored sign-in, or None when there is none (or it is not one this CLI wrote)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{path}: unreadable credentials ({error}): run penguinmails login"
        ) from error
    known = {f.name for f in fields(Credentials)}
    if not isinstance(raw, dict) or not isinstance(raw.get("api_url"), str):
        raise ValueError(f"{path}: not a credentials file: run penguinmails login")
    return Credentials(**{k: v for k, v in raw.items() if k in known})


def save(path: Path, credentials: Credentials) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file 0600 from the start: the secret is never readable by others,
    # not even between creation and a chmod.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(credentials), out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def delete(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


@contextlib.contextmanager
def refresh_lock(path: Path) -> Iterator[None]:
    """Held while one process refreshes the tokens; the others wait, then read its result."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
