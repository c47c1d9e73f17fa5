"""What every controller shares, built once at operator start and kept in kopf's memo."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from penguinmails.common.settings import OperatorSettings
from penguinmails.operator.kube import Kube


@dataclass
class Context:
    settings: OperatorSettings
    kube: Kube
    db: asyncpg.Pool
