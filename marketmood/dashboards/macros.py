"""Expand Grafana's PostgreSQL macros and template variables the way Grafana does, so panel SQL can run here.

No Grafana server can run in CI, yet a panel whose SQL fails only shows up in front of an analyst. This
expander reproduces what Grafana 11 sends to PostgreSQL:

* template variables first (frontend): ``$__interval``, ``$__interval_ms``, ``$__range``, ``$__range_s``, and
  dashboard variables ``$name`` / ``${name}`` / ``${name:format}``. Without a format the datasource formats
  the value (``SqlDatasource.interpolateVariable``): a multi-value or include-All variable is quoted and joined
  (``'AAPL','MSFT'``, quotes doubled), a single-value one is inserted unquoted with its quotes doubled (so it
  is only safe inside quotes). Formats ``sqlstring`` (every value quoted, quotes doubled), ``raw`` and ``csv``
  (values joined by commas, as they are). "All" inserts the variable's custom all value verbatim whatever the
  format, or every option formatted when it has none;
* then the datasource macros (backend, ``pkg/tsdb/grafana-postgresql-datasource/macros.go``):
  ``$__time``, ``$__timeEpoch``, ``$__timeFilter``, ``$__timeFrom()``, ``$__timeTo()``, ``$__timeGroup``,
  ``$__timeGroupAlias``, ``$__unixEpochFilter``, ``$__unixEpochFrom()``, ``$__unixEpochTo()``.
  Time literals are RFC 3339 in UTC; ``$__timeGroup`` is ``floor(extract(epoch from col)/N)*N``. Its optional
  third argument (a number, ``NULL`` or ``previous``) leaves the SQL alone: Grafana's backend fills the missing
  buckets of the result (:func:`fill_of` reads it, :func:`resample` does what Grafana does).

Unknown macros and undefined variables raise, so a typo fails a test instead of a dashboard.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import available_timezones

from models.labels import normalize_topic

ALL = "$__all"  # the value Grafana stores when "All" is selected

_MACRO = re.compile(r"\$(__[_a-zA-Z0-9]+)\(([^)]*)\)")
_VARIABLE = re.compile(r"\$\{([_a-zA-Z0-9]+)(?::([a-z]+))?\}|\$([_a-zA-Z0-9]+)")
_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# Grafana rounds the auto interval to one of these (kbn.roundInterval, abridged).
_NICE_INTERVALS = (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800)


class MacroError(ValueError):
    """A macro or variable Grafana would not expand (or that this expander does not know)."""


FillMode = Literal["value", "null", "previous"]


@dataclass(frozen=True, slots=True)
class Fill:
    """How Grafana fills the buckets a ``$__timeGroup(col, interval, fill)`` query returned no row for."""

    interval: timedelta
    mode: FillMode
    value: float | None = None


@dataclass(frozen=True, slots=True)
class Variable:
    """A dashboard variable: the selected values (``[ALL]`` for All) and how Grafana formats them."""

    values: Sequence[str]
    options: Sequence[str] = ()
    multi: bool = True
    include_all: bool = True
    all_value: str | None = None


@dataclass(frozen=True)
class QueryContext:
    """What Grafana knows when it runs a panel: the time range, the interval, the variables."""

    time_from: datetime
    time_to: datetime
    interval: timedelta | None = None
    variables: Mapping[str, Variable] = field(default_factory=dict)

    @property
    def effective_interval(self) -> timedelta:
        """The explicit interval, else range / 1000 data points rounded up to a "nice" step like Grafana."""
        if self.interval is not None:
            return self.interval
        raw = (self.time_to - self.time_from).total_seconds() / 1000
        return timedelta(seconds=next((s for s in _NICE_INTERVALS if s >= raw), _NICE_INTERVALS[-1]))


def expand(sql: str, ctx: QueryContext) -> str:
    """The SQL Grafana would send to PostgreSQL for ``sql`` in context ``ctx``."""
    return expand_macros(expand_variables(sql, ctx), ctx)


def format_interval(interval: timedelta) -> str:
    """Grafana's interval text (``5m``, ``1h``, ``30s``, ``500ms``)."""
    ms = round(interval.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def parse_interval(text: str) -> timedelta:
    match = _INTERVAL.match(text.strip().strip("'\""))
    if not match:
        raise MacroError(f"invalid interval {text!r}: expected a number and a unit, e.g. 15m, 1h, 1d")
    try:
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    except OverflowError:  # e.g. 99999999999d: beyond what a timedelta holds
        raise MacroError(f"interval {text!r} is too large") from None


def as_stored(kind: Literal["topic", "ticker"], values: Iterable[str]) -> list[str]:
    """Filter values spelled as the database stores them (canonical topic names, upper-case tickers),
    de-duplicated in order: ``aapl`` matched nothing before. UnknownLabelError names an unknown topic."""
    normalize = normalize_topic if kind == "topic" else (lambda v: v.strip().upper())
    return list(dict.fromkeys(normalize(v) for v in values))


def time_zone_problem(tz: str) -> str | None:
    """Why ``tz`` cannot be a market time zone, or None. IANA names only: ``posixrules`` or ``right/UTC`` load
    in Python but PostgreSQL refuses them (a 500 from /sentiment before)."""
    if tz not in available_timezones():
        return f"{tz!r} is not an IANA time zone (e.g. America/New_York)"
    return None


def is_unknown_time_zone(exc: BaseException) -> bool:
    """A database error saying it does not know the session's time zone (its own tz database may lag)."""
    return getattr(getattr(exc, "orig", None), "pgcode", None) == "22023" and "time zone" in str(exc)


def expand_variables(sql: str, ctx: QueryContext) -> str:
    builtins = {
        "__interval": format_interval(ctx.effective_interval),
        "__interval_ms": str(round(ctx.effective_interval.total_seconds() * 1000)),
        "__range": format_interval(ctx.time_to - ctx.time_from),
        "__range_s": str(round((ctx.time_to - ctx.time_from).total_seconds())),
        "__rate_interval": format_interval(ctx.effective_interval * 4),
    }

    def replace(match: re.Match[str]) -> str:
        name, fmt = match.group(1) or match.group(3), match.group(2)
        if name in builtins:
            return _format([builtins[name]], fmt, listed=False)
        if name.startswith("__"):
            return match.group(0)  # a macro: handled by expand_macros
        if name not in ctx.variables:
            raise MacroError(f"variable ${name} is not defined")
        return _format_variable(ctx.variables[name], fmt)

    return _VARIABLE.sub(replace, sql)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format(values: Sequence[str], fmt: str | None, *, listed: bool) -> str:
    """Grafana's formatting of selected ``values``; ``listed``: the datasource gets a list (multi or All)."""
    if fmt is None:  # the datasource's own: quote a list, only double the quotes of a single value
        return ",".join(_quote(v) for v in values) if listed else values[0].replace("'", "''")
    if fmt == "sqlstring":
        return ",".join(_quote(v) for v in values)
    if fmt in {"raw", "csv"}:
        return ",".join(values)
    raise MacroError(f"variable format :{fmt} is not supported here (sqlstring, raw, csv)")


def _format_variable(var: Variable, fmt: str | None = None) -> str:
    values = list(var.values)
    if ALL in values:
        if var.all_value is not None:
            return var.all_value  # Grafana leaves a custom all value unformatted, whatever the format
        values = list(var.options)
    elif not (var.multi or var.include_all) and len(values) != 1:
        raise MacroError("a single-value variable needs exactly one value")
    return _format(values, fmt, listed=var.multi or var.include_all)


def _rfc3339(moment: datetime) -> str:
    utc = moment.astimezone(timezone.utc)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _parse_fill(arg: str, interval: timedelta) -> Fill:
    """Grafana's ``SetupFillmode``: ``NULL``, ``previous`` or a number (anything else is an error)."""
    if arg == "NULL":
        return Fill(interval, "null")
    if arg == "previous":
        return Fill(interval, "previous")
    try:
        return Fill(interval, "value", float(arg))
    except ValueError:
        raise MacroError(f"error parsing fill value {arg}") from None


def _group_args(args: list[str], ctx: QueryContext) -> tuple[timedelta, Fill | None]:
    """The interval and the optional fill of ``$__timeGroup(column, interval[, fill])``."""
    if len(args) < 2:
        raise MacroError(f"$__timeGroup needs a column and an interval, got {args}")
    if len(args) > 3:
        raise MacroError(f"$__timeGroup takes a column, an interval and an optional fill, got {args}")
    spec = args[1].strip("'\"")
    interval = ctx.effective_interval if spec in {"auto", "$__interval"} else parse_interval(spec)
    return interval, (_parse_fill(args[2], interval) if len(args) == 3 else None)


def _macro_args(raw_args: str) -> list[str]:
    return [a.strip() for a in raw_args.split(",")] if raw_args.strip() else []


def fill_of(sql: str, ctx: QueryContext) -> Fill | None:
    """The fill a query asks of Grafana (third argument of ``$__timeGroup``/``$__timeGroupAlias``), or None."""
    found = None
    for match in _MACRO.finditer(expand_variables(sql, ctx)):
        if match.group(1) in {"__timeGroup", "__timeGroupAlias"}:
            found = _group_args(_macro_args(match.group(2)), ctx)[1] or found
    return found


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) else value


def resample(rows: Sequence[dict[str, Any]], fill: Fill, ctx: QueryContext, columns: Sequence[str] = (),
             time_column: str = "time") -> list[dict[str, Any]]:
    """The rows Grafana draws for a filled time-series query (``sqlutil.ResampleWideFrame``): one per interval
    from the range start (Unix seconds rounded down to the interval) to the range end; each takes the last row
    in ``(t - interval, t]``, else the fill (the value, NULL, or the previous row's). Times come back as UTC
    datetimes and numbers as floats, as Grafana converts them; every other column (of ``columns``, else of the
    rows) is a value."""
    step = int(fill.interval.total_seconds())
    if step < 1:
        raise MacroError("a filled $__timeGroup needs an interval of at least 1s")
    ordered = sorted(rows, key=lambda r: _epoch(r[time_column]))
    columns = [c for c in (columns or (ordered[0] if ordered else {})) if c != time_column]
    out: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    i, t, end = 0, int(ctx.time_from.timestamp()) // step * step, ctx.time_to.timestamp()
    while t <= end:
        inside = None
        while i < len(ordered) and _epoch(ordered[i][time_column]) <= t:
            if _epoch(ordered[i][time_column]) > t - step:
                inside = ordered[i]
            last, i = ordered[i], i + 1
        if inside is not None:
            values = {c: _as_float(inside[c]) for c in columns}
        elif fill.mode == "previous":
            values = {c: (_as_float(last[c]) if last is not None else None) for c in columns}
        else:
            values = {c: fill.value for c in columns}
        out.append({time_column: datetime.fromtimestamp(t, tz=timezone.utc), **values})
        t += step
    return out


def expand_macros(sql: str, ctx: QueryContext) -> str:
    def group(args: list[str]) -> str:
        interval, _ = _group_args(args, ctx)
        secs = _number(interval.total_seconds())
        return f"floor(extract(epoch from {args[0]})/{secs})*{secs}"

    def one_column(name: str, args: list[str]) -> str:
        if len(args) != 1 or not args[0]:
            raise MacroError(f"${name} needs exactly one column, got {args}")
        return args[0]

    def replace(match: re.Match[str]) -> str:
        name, raw_args = match.group(1), match.group(2)
        args = _macro_args(raw_args)
        frm, to = _rfc3339(ctx.time_from), _rfc3339(ctx.time_to)
        if name == "__time":
            return f'{one_column(name, args)} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {one_column(name, args)}) as "time"'
        if name == "__timeFilter":
            return f"{one_column(name, args)} BETWEEN '{frm}' AND '{to}'"
        if name == "__timeFrom":
            return f"'{frm}'"
        if name == "__timeTo":
            return f"'{to}'"
        if name == "__timeGroup":
            return group(args)
        if name == "__timeGroupAlias":
            return group(args) + ' AS "time"'
        if name == "__unixEpochFilter":
            col = one_column(name, args)
            return f"{col} >= {int(ctx.time_from.timestamp())} AND {col} <= {int(ctx.time_to.timestamp())}"
        if name == "__unixEpochFrom":
            return str(int(ctx.time_from.timestamp()))
        if name == "__unixEpochTo":
            return str(int(ctx.time_to.timestamp()))
        raise MacroError(f"unknown macro ${name}")

    expanded = _MACRO.sub(replace, sql)
    leftover = re.search(r"\$__\w+", expanded)
    if leftover:
        raise MacroError(f"unexpanded {leftover.group(0)} in query")
    return expanded
