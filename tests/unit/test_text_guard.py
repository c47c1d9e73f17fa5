"""The control-character check (common/text.py) and how the API's guard names the field."""

from __future__ import annotations

from penguinmails.api.http.text_guard import _in_json, _template
from penguinmails.common.text import control_character


def test_control_characters_but_line_breaks_in_text() -> None:
    assert control_character("a\x00b") == "U+0000"
    assert control_character("bell\x07") == "U+0007"
    assert control_character("del\x7f") == "U+007F"
    assert control_character("two\nlines\r\n\tand a tab") is None
    assert control_character("a\nb", one_line=True) == "U+000A"
    assert control_character("café ☃ \u200b") is None


def test_the_json_field_is_named_as_the_wire_names_it() -> None:
    assert _in_json({"spec": {"from": {"name": "ok", "address": "a\x00@b"}}}) == (
        "spec.from.address",
        "U+0000",
    )
    assert _in_json({"emails": ["a@b.c", "x\x01@y.z"]}) == ("emails[1]", "U+0001")
    assert _in_json({"fields": {"k\x00ey": "v"}}) == ("fields.k\\x00ey", "U+0000")
    assert _in_json({"text": "Hello\n{{ first_name }}\n"}) is None
    assert _in_json("\x00") == ("body", "U+0000")


def test_path_templates_name_their_parameters() -> None:
    found = _template("/v1/tenants/{tenant}/campaigns/{name}/pause").match(
        "/v1/tenants/acme/campaigns/a\x00b/pause"
    )
    assert found is not None and found.groupdict() == {"tenant": "acme", "name": "a\x00b"}
    assert _template("/v1/tenants/{tenant}/campaigns").match("/v1/tenants/a/b/campaigns") is None
