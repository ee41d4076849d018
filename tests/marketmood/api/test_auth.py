"""Bearer tokens as the client sends them: bytes on the wire, configured as text."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from marketmood.api.auth import authenticate, parse_tokens


def test_a_non_ascii_token_is_accepted_as_its_utf8_bytes(make_client: Callable[..., TestClient]) -> None:
    """Header bytes reach the app decoded as latin-1; comparing their UTF-8 re-encoding with the secret's
    refused a configured ``sëcret`` sent correctly (401 for ever, with nothing to say why)."""
    client = make_client(tokens=("jörg:sëcret", "plain-secret"))
    ack = client.post("/alerts/999999999/ack", headers={"Authorization": "Bearer sëcret".encode()})
    assert ack.status_code == 404, ack.text  # authenticated: the alert does not exist
    wrong = client.post("/alerts/999999999/ack", headers={"Authorization": "Bearer sëcrët".encode()})
    assert wrong.status_code == 401
    assert client.post("/alerts/999999999/ack", headers={"Authorization": "Bearer plain-secret"}).status_code == 404


def test_authenticate_takes_text_from_a_direct_call_as_meant() -> None:
    tokens = parse_tokens(["jörg:sëcret", "ünï"])
    assert authenticate("sëcret", tokens) is None  # latin-1 text of the bytes is what a header gives ...
    assert authenticate("sëcret".encode().decode("latin-1"), tokens).name == "jörg"  # type: ignore[union-attr]
    assert authenticate("ünï€", tokens) is None and authenticate("nope", tokens) is None


def test_two_entries_with_one_secret_are_refused_naming_both_and_not_the_secret() -> None:
    """``alice:x`` and ``bob:x`` made every request bearing x act as bob (the last entry): alice's labels were
    recorded as bob's. Refused, named by identity; the secret itself is never printed."""
    import pytest

    from marketmood.settings import ConfigError

    with pytest.raises(ConfigError) as named:
        parse_tokens(["alice:sh4red-secret", "carol:other", "bob:sh4red-secret"])
    assert "alice and bob share one secret" in str(named.value) and "sh4red" not in str(named.value)
    with pytest.raises(ConfigError) as bare:  # a bare token that is also someone's secret
        parse_tokens(["alice:sh4red-secret", "sh4red-secret"])
    assert "alice and token-" in str(bare.value) and "sh4red" not in str(bare.value)
    assert [i.name for _, i in parse_tokens(["alice:a1", "bob:b1", "a1:x"])] == ["alice", "bob", "a1"]


def test_the_api_command_refuses_a_shared_secret_in_one_line_before_starting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import shutil
    import socket
    import subprocess

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MARKETMOOD_")}
    env = {**clean, "MARKETMOOD_HOME": str(tmp_path / "home"),
           "MARKETMOOD_API__TOKENS": '["alice:sh4red-secret", "bob:sh4red-secret"]'}
    with socket.socket() as probe:  # a free port: on the old code the api started and served there
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    proc = subprocess.Popen([shutil.which("marketmood") or "marketmood", "api", "--port", port], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # it started serving: stop it the way an operator would (no orphan database)
        proc.terminate()
        _, stderr = proc.communicate(timeout=120)
        raise AssertionError(f"the api started with a shared secret: {stderr[-2000:]}") from None
    assert proc.returncode == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "share one secret" in lines[0] and "sh4red" not in stderr, stderr
    assert not (tmp_path / "home" / "postgres").exists()  # refused before the embedded database started
