"""Every command of ``marketmood`` explains itself: a docstring per command, help text per option, and every
argument named in its command's help (click arguments have no help of their own). Also the conventions of
docs/operations.md: ``--json`` is a flag, ``--out`` names where files go, ``--by`` names the acting user."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest

from marketmood.cli import cli


def _walk(group: click.Group, prefix: str = "marketmood") -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        path = f"{prefix} {name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from _walk(command, path)


COMMANDS = list(_walk(cli))


def test_the_walk_sees_every_area() -> None:
    names = {path.split()[1] for path, _ in COMMANDS}
    assert {"publish", "report", "grafana", "db", "alerts"} <= names
    assert len(COMMANDS) >= 15


def test_every_command_option_and_argument_has_help() -> None:
    missing: list[str] = []
    for path, command in COMMANDS:
        if not (command.help or "").strip():
            missing.append(f"{path}: no docstring")
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip():
                missing.append(f"{path} {param.opts[0]}: no help")
            if isinstance(param, click.Argument):
                name = param.human_readable_name.upper()
                if name not in (command.help or ""):
                    missing.append(f"{path} {name}: argument not explained in the docstring")
    assert missing == [], "\n".join(missing)


@pytest.mark.parametrize(("flag", "kind"), [("--json", "flag"), ("--by", "value")])
def test_shared_option_conventions(flag: str, kind: str) -> None:
    wrong: list[str] = []
    for path, command in COMMANDS:
        for param in command.params:
            if isinstance(param, click.Option) and flag in param.opts:
                if (kind == "flag") != param.is_flag:
                    wrong.append(f"{path} {flag}")
    assert wrong == [], f"{flag} must be a {kind} everywhere (docs/operations.md, CLI conventions): {wrong}"


def test_the_acting_user_is_always_by() -> None:
    wrong = [f"{path} {opt}" for path, command in COMMANDS for param in command.params
             if isinstance(param, click.Option) for opt in param.opts if opt in {"--author", "--user", "--who"}]
    assert wrong == [], f"the acting user is --by (docs/operations.md): {wrong}"


def _path_kind(param: click.Parameter) -> str | None:
    if isinstance(param.type, click.Path):
        return {(True, False): "file", (False, True): "dir"}.get((param.type.file_okay, param.type.dir_okay), "path")
    return None


def test_one_option_name_means_one_kind_of_path() -> None:
    kinds: dict[str, dict[str, str]] = {}
    for path, command in COMMANDS:
        for param in command.params:
            kind = _path_kind(param)
            if isinstance(param, click.Option) and kind in {"file", "dir"}:
                for opt in param.opts:
                    kinds.setdefault(opt, {})[path] = kind
    mixed = {opt: where for opt, where in kinds.items() if len(set(where.values())) > 1}
    assert mixed == {}, f"an option is a file in one command and a folder in another: {mixed}"
