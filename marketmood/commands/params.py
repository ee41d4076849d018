"""Click parameter types shared by the commands."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinities: NaN passes every range comparison, so
    ``--rate nan`` would silently switch pacing off and ``--duration nan`` never stop."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        result = super().convert(value, param, ctx)
        if isinstance(result, float) and not math.isfinite(result):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return result


FINITE_FLOAT = FiniteFloatRange()
