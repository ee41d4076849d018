"""Migration 0002: Grafana's role reads every table (also ones created later) and can write none."""

from __future__ import annotations

import pytest
from sqlalchemy import exc, text

from storage.db import make_engine
from tests.dashboards.conftest import reader_url


def test_reader_can_select_but_not_write(db_url: str) -> None:
    owner = make_engine(db_url)
    reader = make_engine(reader_url(db_url))
    try:
        with owner.begin() as conn:
            conn.execute(text("CREATE TABLE later_table (x int)"))  # as a future migration would
            conn.execute(text("INSERT INTO later_table VALUES (1)"))
        with reader.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == "marketmood_grafana"
            assert conn.execute(text("SELECT count(*) FROM articles")).scalar_one() == 0
            assert conn.execute(text("SELECT x FROM later_table")).scalar_one() == 1  # default privileges
        for statement in (
            "INSERT INTO feedback (text, topic, author) VALUES ('t', 'Macro', 'x')",
            "DELETE FROM alerts",
            "DROP TABLE later_table",
        ):
            with reader.connect() as conn, pytest.raises(exc.DBAPIError) as failure:
                conn.execute(text(statement))
            assert failure.value.orig.pgcode in {"42501", "25006"}  # insufficient privilege / read-only txn
    finally:
        reader.dispose()
        owner.dispose()
