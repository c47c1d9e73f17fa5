"""Rendering: sandboxed templates, per-contact failures, footer and RFC 8058 headers."""

from __future__ import annotations

import email
import uuid

import pytest

from penguinmails.common.db.ledger import CampaignPlan, Relay
from penguinmails.sender.render import (
    MAX_OUTPUT_CHARS,
    MessageParts,
    Renderer,
    RenderError,
    _trial_fault,
    message_id,
)

CAMPAIGN = uuid.UUID("12345678-1234-5678-1234-567812345678")


def plan(**changes: object) -> CampaignPlan:
    base: dict[str, object] = {
        "from_address": "jane@example.com",
        "from_name": "Jane Doe",
        "subject": "Hi {{ first_name }}",
        "text": "Hello {{ first_name }} from {{ company }}",
        "html": "<html><body><p>Hello {{ first_name }}</p></body></html>",
        "domain": "example.com",
        "dkim_secret": "example-dkim",
        "unsubscribe_url": "https://u.example.com/u",
        "unsubscribe_mailto": "unsubscribe@example.com",
        "postal_address": "1 Penguin Way, Iceberg",
        "relays": [Relay(name="r", host="127.0.0.1", port=25)],
    }
    return CampaignPlan.model_validate(base | changes)


def parts(fields: dict[str, object], delivery_id: int = 7) -> MessageParts:
    return MessageParts(delivery_id, CAMPAIGN, "bob@dest.test", fields, "utok", "btok")


def test_message_has_footer_unsubscribe_headers_and_stable_id() -> None:
    raw = Renderer(plan()).render(parts({"first_name": "Bob", "company": "Acme"}))
    message = email.message_from_bytes(raw)
    assert message["Subject"] == "Hi Bob"
    assert message["List-Unsubscribe"].replace("\r\n", "") == (
        "<https://u.example.com/u/utok>, <mailto:unsubscribe+utok@example.com?subject=unsubscribe>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"] == message_id(CAMPAIGN, 7, "example.com")
    text, html = (
        bytes(part.get_payload(decode=True)).decode()
        for part in message.get_payload()
        if isinstance(part, email.message.Message)
    )
    assert "Hello Bob from Acme" in text and "1 Penguin Way, Iceberg" in text
    assert "https://u.example.com/u/utok" in text
    assert html.index("Unsubscribe") < html.index("</body>")
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_missing_field_fails_only_that_delivery_with_its_name() -> None:
    renderer = Renderer(plan())
    with pytest.raises(RenderError, match="company"):
        renderer.render(parts({"first_name": "Bob"}))
    assert renderer.render(parts({"first_name": "Ann", "company": "X"}))


def test_templates_cannot_reach_python_internals() -> None:
    renderer = Renderer(plan(subject="{{ ''.__class__.__mro__[1].__subclasses__() }}"))
    with pytest.raises(RenderError):
        renderer.render(parts({"first_name": "Bob", "company": "X"}))


def test_html_fields_are_escaped_and_subject_cannot_inject_headers() -> None:
    raw = Renderer(plan()).render(parts({"first_name": "<script>", "company": "X"}))
    assert b"<script>" not in raw.split(b"text/html")[1]
    with pytest.raises(RenderError, match="several lines"):
        Renderer(plan()).render(parts({"first_name": "x\r\nBcc: evil@x.test", "company": "X"}))


def test_non_ascii_subject_is_encoded() -> None:
    raw = Renderer(plan()).render(parts({"first_name": "Zoë", "company": "X"}))
    header = email.message_from_bytes(raw)["Subject"]
    assert "=?utf-8?" in header
    assert str(email.header.make_header(email.header.decode_header(header))) == "Hi Zoë"


# ---------------------------------------------------------------- untrusted templates: limits

HOSTILE_ON_THEIR_OWN = [
    pytest.param("text", "{{ 'x' * 10**9 }}", "output limit", id="repeat"),
    pytest.param("text", "{{ 'x'|center(1000000000) }}", "output limit", id="filter-width"),
    pytest.param("subject", "{{ 'x'.ljust(10**9) }}", "output limit", id="method-width"),
    pytest.param("html", "{{ '%0999999999d' % 1 }}", "output limit", id="percent-width"),
    pytest.param("text", "{{ '{:>999999999}'.format(1) }}", "output limit", id="format-width"),
    pytest.param("text", "{{ '%*d' % (10**9, 1) }}", "output limit", id="percent-star"),
    pytest.param("text", "{{ '{:>{}}'.format(1, 10**9) }}", "output limit", id="format-nested"),
    pytest.param("text", "{{ '%0999999999d'|format(1) }}", "output limit", id="format-filter"),
    pytest.param("text", "{{ 7 ** 100000 }}", "bits", id="power"),
    pytest.param(
        "text",
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}",
        "output limit",
        id="doubling",
    ),
    pytest.param(
        "text", "{% set a = 'x' * 999999 %}{{ ([a] * 1000)|join }}", "output limit", id="join"
    ),
    pytest.param(
        # No value is over the limit and none is kept: the budget on all that it builds.
        "text",
        "{% for i in range(3000) %}{% set _ = 'x' * 900000 ~ i %}{% endfor %}",
        "values it builds exceed the limit of 10000000 characters",
        id="accumulate",
    ),
    pytest.param(
        "text", "{% set a = 'x' * 9999 %}{{ a|replace('x', a) }}", "output limit", id="replace"
    ),
    pytest.param(
        "text",
        "{% for i in range(100000) %}{{ 'x' * 99 }}{% endfor %}",
        "output limit",
        id="streamed-output",
    ),
    pytest.param(
        "text",
        "{% set L = range(100000)|list %}{% for a in L %}{% for b in L %}{% endfor %}{% endfor %}",
        "longer than the limit of 1 s",
        id="silent-loop",
    ),
    pytest.param(
        "html",
        "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}",
        "longer than the limit of 1 s",
        id="exponential-macro",
    ),
]


@pytest.mark.parametrize(("field", "template", "limit"), HOSTILE_ON_THEIR_OWN)
def test_a_template_over_a_limit_is_a_campaign_fault_naming_field_and_limit(
    field: str, template: str, limit: str
) -> None:
    # Found by the trial render when the campaign is loaded (the sender pauses it with
    # SenderFault), whatever the contact: no allocation, no hang.
    with pytest.raises(RenderError, match=f"template field '{field}': .*{limit}") as caught:
        Renderer(plan(**{field: template}))
    assert f"limit of {MAX_OUTPUT_CHARS} characters" in str(caught.value) or limit != "output limit"


def test_a_contact_that_pushes_a_template_over_the_limit_fails_only_its_delivery() -> None:
    renderer = Renderer(plan(text="{{ first_name * 100000 }} {{ company }}"))
    assert renderer.render(parts({"first_name": "Bob", "company": "X"}))  # 300 kB: fine
    with pytest.raises(RenderError, match=r"template field 'text': .*output limit of 1000000"):
        renderer.render(parts({"first_name": "B" * 20, "company": "X"}))


def test_containers_cannot_grow_in_place() -> None:
    # `L.extend(L)` would grow a list by references, unseen by the size budget.
    renderer = Renderer(plan(text="{% set L = [first_name] %}{{ L.extend(L) }}{{ L|length }}"))
    with pytest.raises(RenderError, match=r"template field 'text': .*unsafe"):
        renderer.render(parts({"first_name": "Bob", "company": "X"}))


def test_template_bugs_fail_the_delivery_with_the_field_not_the_sender() -> None:
    renderer = Renderer(plan(subject="{{ 1 / (first_name|length - 3) }}"))
    with pytest.raises(RenderError, match="template field 'subject': ZeroDivisionError"):
        renderer.render(parts({"first_name": "Bob", "company": "X"}))
    recursive = Renderer(plan(text="{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"))
    with pytest.raises(RenderError, match="template field 'text': RecursionError"):
        recursive.render(parts({"first_name": "Bob", "company": "X"}))


def test_ordinary_templates_render_unchanged_under_the_limits() -> None:
    text = (
        "{% for item in ['a', 'b'] %}{{ loop.index }}{{ item|upper }} {% endfor %}"
        "{{ '%05.1f' % 3.14159 }} {{ '{:>4}'.format(first_name) }} {{ 'x' * 3 }} "
        "{{ first_name ~ '!' }} {{ range(3)|join(',') }} {{ 2 ** 10 }} {{ company|center(7) }}"
        # Large numbers printed are values, not widths; digits outside a conversion are text.
        " {{ '%d' % 5000000 }} {{ '{:,}'.format(2500000) }} {{ 5000000|filesizeformat }}"
        " {{ 'call 08001234567, ref %s'|format(7) }} {{ 'call 08001234567 {}'.format(8) }}"
    )
    raw = Renderer(plan(text=text, html=None)).render(parts({"first_name": "Bob", "company": "X"}))
    body = email.message_from_bytes(raw).get_payload(decode=True)
    assert isinstance(body, bytes)
    assert body.decode().startswith(
        "1A 2B 003.1  Bob xxx Bob! 0,1,2 1024    X    5000000 2,500,000 5.0 MB"
        " call 08001234567, ref 7 call 08001234567 8\r\n\r\n--"
    )


def test_jinja2_has_the_sandbox_escape_fixes() -> None:
    # CVE-2024-56326 (str.format reached indirectly) is fixed in 3.1.5 and CVE-2025-27516
    # (|attr('format')) in 3.1.6; pyproject.toml requires >=3.1.6.
    from importlib.metadata import version

    assert tuple(int(p) for p in version("jinja2").split(".")[:3]) >= (3, 1, 6)
    renderer = Renderer(
        plan(subject="{{ '{0.__class__.__init__.__globals__}'|attr('format')(first_name) }}")
    )
    with pytest.raises(RenderError, match="template field 'subject'"):
        renderer.render(parts({"first_name": "Bob", "company": "X"}))


def test_the_trial_render_runs_once_per_template_not_per_claimed_delivery() -> None:
    # Until the pause takes effect, each delivery already claimed loads the campaign again: a
    # template that runs out of time must not hold the sender's event loop every time.
    slow = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    _trial_fault.cache_clear()
    for _ in range(3):
        with pytest.raises(RenderError, match=r"template field 'text': .*limit of 1 s"):
            Renderer(plan(text=slow))
    # The first load renders the subject and the text (which stops it); the next two find both.
    info = _trial_fault.cache_info()
    assert (info.misses, info.hits) == (2, 4)


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Hello {{ first_name }},\nplain ASCII.\n", "7bit"),
        ("x" * 900 + "\n.a dot line\n", "7bit"),  # long, but within a 7bit line
        ("x" * 997, "quoted-printable"),  # over 998 with its CRLF
        ("Bonjour Zoë,\n", "quoted-printable"),
        ("nul \0 here", "quoted-printable"),
    ],
)
def test_text_goes_7bit_when_it_can_and_decodes_to_what_was_rendered(
    text: str, encoding: str
) -> None:
    """ASCII text with lines a 7bit body may carry goes as it is (nothing to encode); anything
    else quoted-printable. Either way the receiver decodes the rendered text, CRLF-terminated
    lines only, none over 998."""
    raw = Renderer(plan(text=text, html=None)).render(parts({"first_name": "Bob"}))
    message = email.message_from_bytes(raw)
    assert message["Content-Transfer-Encoding"] == encoding
    decoded = bytes(message.get_payload(decode=True)).decode().replace("\r\n", "\n")
    rendered = text.replace("{{ first_name }}", "Bob")
    assert decoded.startswith(rendered.rstrip())
    lines = raw.split(b"\r\n")
    assert b"\n" not in b"".join(lines) and max(map(len, lines)) <= 998
