"""What payments announce: to other features (which payments does not import), and to its
own worker entry points (`tasks`, which import the models; the models send these signals
instead of importing `tasks`, so the package has no import circle)."""

from django.dispatch import Signal

#: Sent with `payment=` inside the transaction that moves a payment to succeeded, once per
#: payment; receivers queue their work with `portal.jobs.enqueue`, so it happens only if that
#: transaction commits (billing.reminders emails staff).
payment_succeeded = Signal()

#: Sent with `payment=` when an auto-pay charge fails (`tasks` emails staff and the customer).
autopay_failed = Signal()

#: Sent with `setup=` inside the transaction that saves a card from a `CardSetup` (`tasks`
#: emails the customer that their card for auto-pay changed).
card_saved = Signal()

#: Sent with `row_id=` when a Halo outbox row is written, inside its transaction (`tasks`
#: queues its delivery; a lost task costs nothing, the ledger's outbox job delivers due rows).
outbox_row_written = Signal()
