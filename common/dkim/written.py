"""The DKIM key set this process last wrote (or read) to each key Secret, by resourceVersion.

A `rotate-dkim` pass would otherwise read the Secret before anything else, one more request on
the way from the annotation to the new key. With the key set this process last wrote, the
rotation starts from memory and writes the new set with that resourceVersion as a
precondition: if anyone else (another replica, a restore from backup, a deletion) changed the
Secret since, the API server refuses the write (409 Conflict) and the pass reads the Secret
and decides again. So a stale memory costs one refused write, never a lost key.
"""

from __future__ import annotations

from dataclasses import dataclass

from penguinmails.common.dkim.keys import KeySet


@dataclass(frozen=True)
class Written:
    resource_version: str
    key_set: KeySet


class WrittenKeys:
    """Key sets by Secret (namespace, name), each with the resourceVersion it was stored at."""

    def __init__(self) -> None:
        self._secrets: dict[tuple[str, str], Written] = {}

    def remember(
        self, namespace: str, name: str, resource_version: str | None, key_set: KeySet
    ) -> None:
        if not resource_version:
            self.forget(namespace, name)
            return
        self._secrets[(namespace, name)] = Written(resource_version, key_set)

    def get(self, namespace: str, name: str) -> Written | None:
        return self._secrets.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        self._secrets.pop((namespace, name), None)
