"""Header fields exactly as they go on the wire: CRLF, folded, RFC 2047 where needed.

    head = unstructured("Subject", subject) + mailbox("From", "Zoë", "zoe@example.com")

Every function returns complete field lines ending in CRLF. The DKIM signer canonicalizes these
bytes, and SMTP sends them unchanged, so nothing between signing and the receiver re-folds
(a bare LF here was turned into CRLF by the SMTP client after signing, breaking DKIM).

- Lines are folded at whitespace to stay within 78 characters where the text allows, and always
  within 998 (RFC 5322 2.1.1): a word too long for that is sent as encoded-words instead.
- Non-ASCII text (and ASCII that looks like an encoded-word) becomes RFC 2047 encoded-words of
  at most 75 characters each, split on character boundaries (never inside a UTF-8 sequence);
  Q or B, whichever is shorter. The Q alphabet used is the one allowed in a display name
  (RFC 2047 5(3)), so the same encoder serves Subject and From.
- Control characters (C0, DEL, C1, Unicode line and paragraph separators) never reach a header:
  `clean()` turns them into spaces. CR and LF in a value are refused by the caller instead
  (a template that renders a line break into the subject is a bug worth a clear error).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

__all__ = ["LINE_LIMIT", "SOFT_LIMIT", "clean", "mailbox", "structured", "unstructured"]

SOFT_LIMIT = 78
LINE_LIMIT = 998
_WORD_LIMIT = 75  # RFC 2047 2: an encoded-word is at most 75 characters
_PREFIX = {"q": "=?utf-8?q?", "b": "=?utf-8?b?"}
_OVERHEAD = len("=?utf-8?q?") + len("?=")

# C0 controls (tab included: folding whitespace is ours to place), DEL, C1 controls, and the
# Unicode line/paragraph separators that some readers render as line breaks.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SPACES = re.compile(" {2,}")
# RFC 5322 atext: a display name of only these (and spaces) needs no quoting.
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*")
# Characters a Q-encoded word may carry as themselves, in a phrase as in text (RFC 2047 5(3)).
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")


def clean(value: str) -> str:
    """`value` with control characters as spaces, whitespace runs collapsed, ends trimmed."""
    return _SPACES.sub(" ", _CONTROLS.sub(" ", value)).strip()


def unstructured(name: str, value: str) -> str:
    """An unstructured field (Subject): folded ASCII words, encoded-words where needed."""
    value = clean(value)
    return _fold(name, _words(name, value.split(" ") if value else [], _plain_text))


def mailbox(name: str, display_name: str | None, address: str) -> str:
    """An address field (From, To, Reply-To): `Display Name <address>` or the bare address."""
    if _CONTROLS.search(address) or " " in address:
        raise ValueError(f"{name}: the address {address!r} contains spaces or control characters")
    display = clean(display_name or "")
    if not display:
        return _fold(name, [address])
    if display.isascii() and not _ATEXT.fullmatch(display):
        # Readable: a quoted-string (folding whitespace is allowed inside one).
        words = ('"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"').split(" ")
    else:
        words = _words(name, display.split(" "), _plain_phrase)
    return _fold(name, [*words, f"<{address}>"])


def structured(name: str, tokens: list[str]) -> str:
    """A structured field whose `tokens` may be separated by folding whitespace."""
    for token in tokens:
        if _CONTROLS.search(token) or len(name) + len(token) + 3 > LINE_LIMIT:
            raise ValueError(f"{name}: {token[:40]!r}… cannot be sent in a header")
    return _fold(name, tokens)


def _first_budget(name: str) -> int:
    # "Name: " comes before the first word on its line.
    return max(_OVERHEAD + 12, min(_WORD_LIMIT, SOFT_LIMIT - len(name) - 2))


def _plain_text(name: str, word: str) -> bool:
    """A word of unstructured text that can go as itself: ASCII, not mistakable for an
    encoded-word, and short enough to fit on a line of its own."""
    return word.isascii() and "=?" not in word and len(word) + len(name) + 3 <= LINE_LIMIT


def _plain_phrase(name: str, word: str) -> bool:
    return _plain_text(name, word) and _ATEXT.fullmatch(word) is not None


def _words(name: str, words: list[str], plain: Callable[[str, str], bool]) -> list[str]:
    """`words` with each run of words that cannot go as themselves replaced by encoded-words.

    A run is encoded as one text, spaces included: whitespace between two encoded-words is
    not part of the text (RFC 2047 6.2), so a space between them would be lost."""
    out: list[str] = []
    run: list[str] = []
    for word in [*words, None]:
        if word is not None and not plain(name, word):
            run.append(word)
            continue
        if run:
            first = _first_budget(name) if not out else _WORD_LIMIT
            out += _encoded_words(" ".join(run), first=first)
            run = []
        if word is not None:
            out.append(word)
    return out


def _fold(name: str, words: list[str]) -> str:
    """Join `words` with single spaces, breaking lines (CRLF + space) before 78 characters."""
    lines: list[str] = []
    line = f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > SOFT_LIMIT and line.strip() != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _encoded_words(text: str, *, first: int) -> list[str]:
    q, b = _split_words(text, "q", first), _split_words(text, "b", first)
    return q if sum(map(len, q)) <= sum(map(len, b)) else b


def _q(char: str) -> str:
    out = []
    for byte in char.encode("utf-8"):
        if byte == 0x20:
            out.append("_")
        elif byte in _Q_SAFE:
            out.append(chr(byte))
        else:
            out.append(f"={byte:02X}")
    return "".join(out)


def _split_words(text: str, encoding: str, first: int) -> list[str]:
    """Encoded-words of `text`, each within its budget, split between characters."""
    words: list[str] = []
    budget = first - _OVERHEAD
    chunk = ""
    chunk_bytes = b""
    for char in text:
        raw = char.encode("utf-8")
        if encoding == "q":
            fits = len(chunk) + len(_q(char)) <= budget
        else:
            fits = -(-(len(chunk_bytes) + len(raw)) // 3) * 4 <= budget
        if not fits and chunk_bytes:
            words.append(_word(encoding, chunk, chunk_bytes))
            chunk, chunk_bytes = "", b""
            budget = _WORD_LIMIT - _OVERHEAD
        chunk += _q(char) if encoding == "q" else ""
        chunk_bytes += raw
    if chunk_bytes:
        words.append(_word(encoding, chunk, chunk_bytes))
    return words


def _word(encoding: str, q_text: str, raw: bytes) -> str:
    body = q_text if encoding == "q" else base64.b64encode(raw).decode("ascii")
    return f"{_PREFIX[encoding]}{body}?="
