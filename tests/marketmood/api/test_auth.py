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
