"""The migrations form one linear chain: one head, each revision revising the one before it (a branch means two
areas added revisions without ordering them, and `downgrade -1` would become ambiguous)."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from storage.migrate import alembic_config


def test_one_head_and_a_linear_chain_in_file_order() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1, script.get_heads()
    chain = [rev.revision for rev in script.walk_revisions()][::-1]  # base first
    assert chain == sorted(chain), chain  # the number prefix of each id orders the chain
    for rev in script.walk_revisions():
        assert rev.down_revision is None or isinstance(rev.down_revision, str), f"{rev.revision} merges branches"
