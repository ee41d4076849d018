"""The PostgreSQL query type that grafana-foundation-sdk (11.6) lacks: a raw-SQL target and annotation target.

The SDK ships builders for Prometheus, Loki, ... but none for Grafana's SQL datasources. Grafana stores a
PostgreSQL target as ``{"refId", "rawSql", "format", "editorMode": "code", "rawQuery": true}``; these small
classes emit exactly that so our panels are typed like the SDK's own.
"""

from __future__ import annotations

import typing

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

POSTGRES_TYPE = "grafana-postgresql-datasource"

SqlFormat = typing.Literal["time_series", "table"]


class PostgresQuery(cogvariants.Dataquery):
    """One raw-SQL target of the PostgreSQL datasource."""

    def __init__(
        self,
        raw_sql: str = "",
        format_val: SqlFormat = "time_series",
        ref_id: str = "A",
        datasource: dashboard.DataSourceRef | None = None,
        hide: bool | None = None,
    ) -> None:
        self.raw_sql = raw_sql
        self.format_val = format_val
        self.ref_id = ref_id
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "rawSql": self.raw_sql,
            "format": self.format_val,
            "editorMode": "code",
            "rawQuery": True,
        }
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload


class PostgresQueryBuilder(cogbuilder.Builder[PostgresQuery]):
    """Builder in the SDK's style: ``PostgresQueryBuilder().raw_sql(SQL).format("table")``."""

    def __init__(self) -> None:
        self._internal = PostgresQuery()

    def build(self) -> PostgresQuery:
        return self._internal

    def raw_sql(self, raw_sql: str) -> typing.Self:
        self._internal.raw_sql = raw_sql
        return self

    def format(self, format_val: SqlFormat) -> typing.Self:
        self._internal.format_val = format_val
        return self

    def ref_id(self, ref_id: str) -> typing.Self:
        self._internal.ref_id = ref_id
        return self

    def datasource(self, datasource: dashboard.DataSourceRef) -> typing.Self:
        self._internal.datasource = datasource
        return self


class SqlAnnotationTarget(dashboard.AnnotationTarget):
    """Annotation target of a SQL datasource (the SDK's AnnotationTarget only models the built-in one)."""

    def __init__(self, raw_sql: str = "", ref_id: str = "Anno") -> None:
        super().__init__()
        self.raw_sql = raw_sql
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "rawSql": self.raw_sql,
            "format": "table",
            "editorMode": "code",
            "rawQuery": True,
        }


class SqlAnnotationTargetBuilder(cogbuilder.Builder[dashboard.AnnotationTarget]):
    def __init__(self, raw_sql: str) -> None:
        self._internal = SqlAnnotationTarget(raw_sql)

    def build(self) -> dashboard.AnnotationTarget:
        return self._internal
