"""Webhook deliveries from a background thread, so a slow or failing receiver
never holds up (or breaks) an API call.

Every attempt is logged for ``GET /_sim/webhook-deliveries``; ``wait`` (``POST
/_sim/webhook-deliveries/wait``) answers once a number of attempts are logged, and
optionally once nothing is left to send, so tests wait on the event, not a clock.  The
``webhook_duplicates`` switch sends each delivery twice (same payload, as a
retrying Halo would); ``webhook_out_of_order`` gathers what is queued within
``REORDER_WINDOW`` seconds and sends it newest first.
"""

import queue
import threading
import time

import requests

TIMEOUT = 3
REORDER_WINDOW = 0.3


class WebhookDispatcher:
    def __init__(self, switches):
        """``switches()`` answers ``(duplicates, out_of_order)`` at delivery time."""
        self._switches = switches
        self._queue = queue.Queue()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a delivery logged or finished
        self._log = []
        self._generation = 0
        self._pending = 0  # queued or being sent
        self._closed = False
        self._http = requests.Session()
        self._thread = threading.Thread(target=self._run, name="halo-sim-webhooks", daemon=True)
        self._thread.start()

    def send(self, webhook, payload):
        with self._lock:
            self._pending += 1
            self._queue.put((self._generation, webhook, payload))

    def deliveries(self):
        with self._lock:
            return list(self._log)

    def wait(self, count, idle=False, timeout=30.0):
        """``(attempts logged, True)`` once at least ``count`` are logged (and, with ``idle``,
        nothing is queued or being sent); ``(attempts, False)`` after ``timeout`` seconds."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: self._closed or (len(self._log) >= count and not (idle and self._pending)),
                timeout,
            )
            return list(self._log), bool(done) and not self._closed

    def clear(self):
        """Forget the log and anything still queued (used on reset)."""
        with self._lock:
            self._generation += 1
            self._log.clear()
            self._changed.notify_all()

    def close(self):
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        self._queue.put(None)
        self._thread.join(timeout=TIMEOUT + 1)
        self._http.close()

    def _run(self):
        while (item := self._queue.get()) is not None:
            batch = [item]
            duplicates, out_of_order = self._switches()
            if out_of_order:
                deadline = time.monotonic() + REORDER_WINDOW
                while (wait := deadline - time.monotonic()) > 0:
                    try:
                        item = self._queue.get(timeout=wait)
                    except queue.Empty:
                        break
                    if item is None:
                        return
                    batch.append(item)
                batch.reverse()
            for generation, webhook, payload in batch:
                for attempt in range(1, 3 if duplicates else 2):
                    if generation == self._generation:
                        self._deliver(generation, webhook, payload, attempt)
                with self._lock:
                    self._pending -= 1
                    self._changed.notify_all()

    def _deliver(self, generation, webhook, payload, attempt):
        auth = None
        if webhook.get("authentication_type") == 1:
            auth = (webhook.get("basic_username") or "", webhook.get("basic_password") or "")
        entry = {
            "webhook_id": webhook["id"],
            "url": webhook["url"],
            "event": payload["event"],
            "object_id": payload["object_id"],
            "delivery_id": payload["id"],
            "attempt": attempt,
        }
        try:
            # Webhook.method 1 is POST (our choice; registration refuses others).
            reply = self._http.post(webhook["url"], json=payload, auth=auth, timeout=TIMEOUT)
            entry["status"] = reply.status_code
        except requests.RequestException as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        with self._lock:
            if generation == self._generation:
                self._log.append(entry)
                self._changed.notify_all()
