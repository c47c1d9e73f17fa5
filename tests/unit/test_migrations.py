"""The shipped migration files and the ordering rules, without a database."""

from __future__ import annotations

import pytest

from penguinmails.common.db.migrate import (
    Migration,
    MigrationError,
    apply_migrations,
    load_migrations,
    main,
)


def test_shipped_migrations_load_in_order() -> None:
    migrations = load_migrations()
    assert migrations[0].name == "0001_initial"
    numbers = [m.number for m in migrations]
    assert numbers == sorted(set(numbers))
    assert all(len(m.checksum) == 64 for m in migrations)


def test_every_tenant_table_in_0001_gets_forced_rls() -> None:
    sql = load_migrations()[0].sql
    for table in ("tenant_audit_events", "contact_lists", "contacts"):
        assert f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;" in sql
        assert f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY;" in sql
        assert f"CREATE POLICY tenant_isolation ON {table}" in sql


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["0001_a", "0001_b"], "share a number"),
        (["0002_b", "0001_a"], "ascending"),
        (["1_a"], "NNNN_name"),
        (["0001_Bad-Name"], "NNNN_name"),
    ],
)
async def test_bad_migration_sets_are_refused(names: list[str], message: str) -> None:
    class NoConnection:
        def is_in_transaction(self) -> bool:
            return False

    with pytest.raises(MigrationError, match=message):
        await apply_migrations(
            NoConnection(),  # type: ignore[arg-type]
            migrations=[Migration(name, "SELECT 1") for name in names],
        )


def test_cli_needs_a_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PM_DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
