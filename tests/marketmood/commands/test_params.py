"""Shared click parameter types: a float option never takes NaN or an infinity (range checks let NaN through)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from marketmood.cli import cli
from marketmood.commands.params import FINITE_FLOAT, FiniteFloatRange


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf"])
def test_nan_and_infinities_are_refused(value: str) -> None:
    for kind in (FINITE_FLOAT, FiniteFloatRange(0), FiniteFloatRange(1, 500)):
        # an infinity may already be out of the range; NaN is in no range, so it must be named as NaN
        message = "not a finite number" if "nan" in value.lower() else "not a finite number|range"
        with pytest.raises(click.BadParameter, match=message):
            kind.convert(value, None, None)
    with pytest.raises(click.BadParameter, match="not a finite number"):
        FINITE_FLOAT.convert(value, None, None)


def test_ranges_still_apply() -> None:
    assert FiniteFloatRange(0, min_open=True).convert("2.5", None, None) == 2.5
    with pytest.raises(click.BadParameter):
        FiniteFloatRange(0, min_open=True).convert("0", None, None)


@pytest.mark.parametrize("args", [["publish", "--rate", "nan", "news.jsonl"], ["demo", "--duration", "nan"],
                                  ["train", "--out", "x", "--lr", "nan"]])
def test_commands_refuse_nan_before_doing_anything(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "not a finite number" in result.output, result.output
