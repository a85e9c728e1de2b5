"""Payment processors behind one interface (`base.Processor`): the built-in test processor
and Stripe."""

from billing.payments.processors.base import (
    CardDetails,
    InvalidWebhook,
    MalformedWebhook,
    Outcome,
    Processor,
    ProcessorError,
    SavedMethod,
    WebhookEvent,
)
from billing.payments.processors.stripe import StripeProcessor
from billing.payments.processors.test import TestProcessor

PROCESSORS = {cls.name: cls for cls in (TestProcessor, StripeProcessor)}


def get_processor(name, settings):
    return PROCESSORS[name](settings)


__all__ = [
    "PROCESSORS",
    "CardDetails",
    "InvalidWebhook",
    "MalformedWebhook",
    "Outcome",
    "Processor",
    "ProcessorError",
    "SavedMethod",
    "StripeProcessor",
    "TestProcessor",
    "WebhookEvent",
    "get_processor",
]
