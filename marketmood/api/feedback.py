"""POST /feedback: analyst labels, accepted only from named tokens (the author is the token's owner).

Why named tokens only: the retrain trusts a label when two different authors agree, so the author must be
who the server authenticated, never a name a client typed. Labels are validated here against the label
maps (``training.feedback_policy.validate_feedback``); storage only stores them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from marketmood.api.auth import TokenIdentity
from marketmood.api.limits import RateLimiter
from marketmood.api.schemas import FeedbackRequest, FeedbackResponse
from storage.feedback import insert_feedback, unknown_article_ids
from training.feedback_policy import validate_feedback


def feedback_router(db: Engine, require_token: Callable[..., TokenIdentity],
                    limiter: RateLimiter | None = None, max_text_chars: int | None = None) -> APIRouter:
    """``limiter``: per-author token bucket (one analyst cannot flood the feedback table; the retrain's
    per-author cap bounds their weight, this bounds their volume). ``max_text_chars``: the longest text or
    article id stored (``/classify``'s limit): without it one row could hold the whole 2 MB body."""
    router = APIRouter(tags=["feedback"])

    @router.post("/feedback", response_model=FeedbackResponse, status_code=201,
                 responses={401: {"description": "Missing or invalid token"},
                            403: {"description": "A bare (unnamed) token: feedback needs a named token"},
                            413: {"description": "A text or article id longer than the API's max_text_chars"},
                            429: {"description": "The author's feedback rate limit was exceeded"},
                            422: {"description": "No subject, no label, an unknown label, or an article_id "
                                                  "without text that names no stored article"}})
    def feedback(body: FeedbackRequest, identity: TokenIdentity = Depends(require_token)) -> Any:
        """Store an analyst's topic and/or sentiment label for an article id or a text (used by retraining).

        The author is the owner of the named token (``name:secret``); a body ``author`` is ignored. Confirming the model's label is as useful as correcting it: the retrain's hold-out needs both.
        """
        if not identity.named:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "feedback needs a named token (name:secret) so the "
                                "author is known; bare tokens may not write feedback")
        wait = limiter.acquire(identity.name) if limiter is not None else 0.0
        if wait > 0:
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                                f"feedback rate limit for {identity.name} exceeded; retry in {wait:.1f} s",
                                headers={"Retry-After": limiter.retry_after(wait)})
        for field, value in (("text", body.text), ("article_id", body.article_id)):
            if max_text_chars is not None and value is not None and len(value) > max_text_chars:
                raise HTTPException(413,
                                    f"{field} has {len(value)} characters; the limit is {max_text_chars}")
        try:
            row = validate_feedback(article_id=body.article_id, text=body.text, topic=body.topic,
                                    sentiment=body.sentiment, author=identity.name)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        with db.begin() as conn:
            if unknown_article_ids(conn, [row]):
                return JSONResponse({"detail": f"article_id {row['article_id']!r} names no stored article, so the "
                                     "label could never be trained on; send the text too (or instead)"},
                                    status_code=422)
            feedback_id = insert_feedback(conn, **row, origin="api")
        return FeedbackResponse(id=feedback_id, author=identity.name)

    return router
