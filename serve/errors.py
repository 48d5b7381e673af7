"""The one way an error becomes an HTTP response: `{"error": {...}}` in the documented shape."""

from __future__ import annotations

from typing import Optional

from fastapi.responses import JSONResponse

from rmcluster.protocol import ErrorBody, ErrorResponse, ScoringError, ServiceOverloadedError


def error_json(status: int, error_type: str, message: str, headers: Optional[dict[str, str]] = None,
               item: Optional[int] = None, field: Optional[str] = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=error_type, code=status, item=item, field=field))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def scoring_error_json(exc: ScoringError) -> JSONResponse:
    headers = None
    if isinstance(exc, ServiceOverloadedError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    return error_json(exc.status_code, exc.error_type, exc.message, headers, exc.item, exc.field)
