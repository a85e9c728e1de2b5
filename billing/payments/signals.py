"""What payments announce to other features (which payments does not import)."""

from django.dispatch import Signal

#: Sent with `payment=` inside the transaction that moves a payment to succeeded, once per
#: payment; receivers queue their work with `portal.jobs.enqueue`, so it happens only if that
#: transaction commits (billing.reminders emails staff).
payment_succeeded = Signal()
