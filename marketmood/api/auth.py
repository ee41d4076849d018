"""Bearer-token authentication for write endpoints; a token can carry the identity recorded as author.

``settings.api.tokens`` entries are either ``name:secret`` (requests bearing ``secret`` act as ``name``) or a
bare ``secret`` (identity ``token-<first 8 hex of its sha256>``, so logs never show the secret itself).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from marketmood.settings import ConfigError


@dataclass(frozen=True, slots=True)
class TokenIdentity:
    name: str
    named: bool  # False for a bare token: the request body may then say who the author is


def parse_tokens(entries: Iterable[str]) -> list[tuple[str, TokenIdentity]]:
    """(secret, identity) pairs from the configured entries; blank entries are ignored.

    Two entries with one secret (``alice:x`` and ``bob:x``) are refused: a request bearing it would act as
    whichever came last, so alice's labels would be recorded as bob's without a word."""
    parsed: list[tuple[str, TokenIdentity]] = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        name, sep, secret = entry.partition(":")
        if sep and name and secret:
            identity = TokenIdentity(name=name, named=True)
        else:
            secret = entry
            identity = TokenIdentity(name=f"token-{hashlib.sha256(entry.encode()).hexdigest()[:8]}", named=False)
        clash = next((other for known, other in parsed if known == secret), None)
        if clash is not None:
            raise ConfigError(f"invalid setting MARKETMOOD_API__TOKENS: {clash.name} and {identity.name} share one "
                              "secret (a request bearing it could act as either): give each its own")
        parsed.append((secret, identity))
    return parsed


def _sent_bytes(presented: str) -> bytes:
    """The bytes the client sent: Starlette decodes header bytes as latin-1, so ``.encode()`` (UTF-8) of a
    non-ASCII token re-encoded it and a configured ``sëcret`` was never accepted."""
    try:
        return presented.encode("latin-1")
    except UnicodeEncodeError:  # not from a header (a direct call): take the text as meant
        return presented.encode()


def authenticate(presented: str, tokens: list[tuple[str, TokenIdentity]]) -> TokenIdentity | None:
    """The identity of a presented token; constant-time comparison against every configured one (as UTF-8)."""
    found = None
    sent = _sent_bytes(presented)
    for secret, identity in tokens:
        if hmac.compare_digest(sent, secret.encode()):
            found = identity
    return found
