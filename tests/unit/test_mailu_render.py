"""MailU configuration rendered from an SmtpServer spec."""

from __future__ import annotations

import pytest
import yaml

from penguinmails.api.v1alpha1.smtpserver import SmtpServerSpec
from penguinmails.operator.mailu.render import (
    MAILU_VERSION,
    MailuSecrets,
    env_values,
    render_compose,
    render_env,
)

SECRETS = MailuSecrets(secret_key="s" * 32, api_token="t" * 40)


def spec(**extra: object) -> SmtpServerSpec:
    return SmtpServerSpec.model_validate(
        {
            "hostname": "mx1.mail.example.com",
            "provider": {"relay": {"host": "relay.example.com"}},
            **extra,
        }
    )


def test_env_has_what_mailu_needs() -> None:
    values = env_values(spec(maxPerHour=500), SECRETS, relaynets=["10.0.0.0/8"])
    assert values["DOMAIN"] == "mail.example.com"
    assert values["HOSTNAMES"] == "mx1.mail.example.com"
    assert values["SECRET_KEY"] == SECRETS.secret_key
    assert values["API"] == "true" and values["WEB_API"] == "/api"
    assert values["API_TOKEN"] == SECRETS.api_token
    assert values["RELAYNETS"] == "10.0.0.0/8"
    assert values["MESSAGE_RATELIMIT"] == "500/hour"
    text = render_env(values)
    assert "TLS_FLAVOR=letsencrypt\n" in text and text.count("\n") == len(values)
    assert repr(SECRETS) == "MailuSecrets(<redacted>)"


def test_env_refuses_multi_line_values() -> None:
    with pytest.raises(ValueError, match="RELAYNETS"):
        env_values(spec(), SECRETS, relaynets=["10.0.0.0/8\nSECRET_KEY=x"])


def test_compose_pins_every_image() -> None:
    document = yaml.safe_load(render_compose())
    images = {name: body["image"] for name, body in document["services"].items()}
    assert images["smtp"] == f"ghcr.io/mailu/postfix:{MAILU_VERSION}"
    assert images["front"] == f"ghcr.io/mailu/nginx:{MAILU_VERSION}"
    assert all(":" in image and not image.endswith(":latest") for image in images.values())
    assert "0.0.0.0:25:25" in document["services"]["front"]["ports"]
    assert render_compose() == render_compose()  # same spec, same file: no needless restarts
