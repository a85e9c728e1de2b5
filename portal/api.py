"""Shared DRF pieces: one error shape for every API answer."""

import logging

from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    """DRF's handler, with every error body shaped `{"error": ..., "detail": ...}`."""
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and "detail" in data and len(data) == 1:
        response.data = {"error": getattr(exc, "default_code", "error"), "detail": data["detail"]}
    else:
        response.data = {"error": "invalid", "detail": data}
    return response
