"""Deterministic fault queue: "the next two POSTs to SoftwareLicence fail".

A rule ``{"kind": ..., "path": ..., "method": ..., "times": 1, "after": 0}``
matches calls whose endpoint name equals ``path`` (case-insensitive: a
resource name such as ``softwarelicence``, or ``token``; absent = any) and,
if given, whose method equals ``method``.  The first matching rule lets
``after`` matching calls through untouched, then fires ``times`` times and
is removed; rules behind it for the same calls wait their turn.

Kinds:

* ``500``          answer ``Internal Server Error`` without applying anything;
* ``429``          answer like the rate limit does, ``Retry-After: seconds``;
* ``drop_before``  close the connection without applying or answering;
* ``drop_after``   apply the call, then close without answering (a lost
                   create response);
* ``timeout``      wait ``seconds`` (make it longer than the client's timeout), apply
                   the call, then answer (``then: "answer"``) or close
                   (``then: "drop"``).
"""

from dataclasses import asdict, dataclass

KINDS = ("500", "429", "drop_before", "drop_after", "timeout")


@dataclass
class FaultRule:
    kind: str
    path: str | None = None
    method: str | None = None
    times: int = 1
    after: int = 0
    seconds: float = 1.0
    then: str = "answer"

    @classmethod
    def from_json(cls, data):
        if not isinstance(data, dict):
            raise ValueError("a fault rule is an object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault rule keys: {', '.join(sorted(unknown))}")
        try:
            rule = cls(
                kind=str(data["kind"]),
                path=str(data["path"]).strip("/").lower() if data.get("path") else None,
                method=str(data["method"]).upper() if data.get("method") else None,
                times=int(data.get("times", 1)),
                after=int(data.get("after", 0)),
                seconds=float(data.get("seconds", 1.0)),
                then=str(data.get("then", "answer")),
            )
        except KeyError:
            raise ValueError("a fault rule needs a kind") from None
        except (TypeError, ValueError):
            raise ValueError("times, after and seconds must be numbers") from None
        if rule.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(KINDS)}")
        if rule.then not in ("answer", "drop"):
            raise ValueError("then must be answer or drop")
        return rule

    def matches(self, method, endpoint):
        return (self.path in (None, endpoint.lower())) and self.method in (None, method)


class FaultQueue:
    def __init__(self):
        self.rules = []

    def add(self, rules):
        self.rules.extend(rules)

    def clear(self):
        self.rules.clear()

    def take(self, method, endpoint):
        """The rule that fires for this call, if any (updating the queue)."""
        for rule in self.rules:
            if not rule.matches(method, endpoint):
                continue
            if rule.after > 0:
                rule.after -= 1
                return None
            rule.times -= 1
            if rule.times <= 0:
                self.rules.remove(rule)
            return rule
        return None

    def to_json(self):
        return [asdict(rule) for rule in self.rules]
