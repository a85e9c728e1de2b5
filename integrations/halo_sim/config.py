"""Run-time switches of a simulator: variants, injected misbehaviour, limits, clock.

The same keys are used everywhere: command-line flags map onto them,
``POST /_sim/config`` takes them as JSON, and ``run_simulator(**options)``
takes them as keyword arguments.
"""

from dataclasses import asdict, dataclass, field

#: Each variant's first form is the default (see section 3 of the contract).
VARIANTS = {
    "envelope": ("plain", "paged"),
    "licence_key": ("licences", "softwarelicences", "bare"),
    "post_response": ("ordered", "last"),
    "error_body": ("resultcode", "dotnet", "error", "text"),
    "retry_after": ("present", "absent"),
    "unknown_update": ("400", "404"),
}


def parse_variants(value):
    """Accept ``{"envelope": "paged"}`` or the flag form ``"envelope=paged,..."``."""
    if isinstance(value, str):
        pairs = (item.split("=", 1) for item in value.split(",") if item.strip())
        try:
            value = {name.strip(): form.strip() for name, form in pairs}
        except ValueError:
            raise ValueError("variants must look like name=form,name=form") from None
    if not isinstance(value, dict):
        raise ValueError("variants must be an object or name=form,... text")
    for name, form in value.items():
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        if str(form) not in VARIANTS[name]:
            forms = "|".join(VARIANTS[name])
            raise ValueError(f"variant {name} must be one of {forms}")
    return {name: str(form) for name, form in value.items()}


def parse_rate_limit(value):
    """Accept ``"300/300"``, ``[300, 300]``, ``{"requests": .., "seconds": ..}``.

    ``None``, ``"off"`` or 0 requests disable the limit.
    """
    if value in (None, "off", "none", 0, "0"):
        return None
    if isinstance(value, str):
        value = value.split("/")
    elif isinstance(value, dict):
        value = (value.get("requests"), value.get("seconds"))
    try:
        requests, seconds = (int(part) for part in value)
    except (TypeError, ValueError):
        raise ValueError("rate_limit must look like N/SECONDS") from None
    if requests <= 0 or seconds <= 0:
        return None
    return requests, seconds


@dataclass
class Config:
    variants: dict = field(default_factory=lambda: {n: f[0] for n, f in VARIANTS.items()})
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    rate_limit: tuple | None = (300, 300)
    token_lifetime: int = 3600
    webhook_duplicates: bool = False
    webhook_out_of_order: bool = False
    clock_offset_seconds: float = 0.0
    verbose: bool = False
    # Append every API request (JSON lines) here, for `manage.py halo_conformance --from`.
    request_log: str = ""

    def update(self, changes):
        """Apply a partial change (all checked first); raises ValueError."""
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        parsed = {}
        for key, value in changes.items():
            if key == "variants":
                parsed[key] = {**self.variants, **parse_variants(value)}
            elif key == "rate_limit":
                parsed[key] = parse_rate_limit(value)
            elif key in ("webhook_duplicates", "webhook_out_of_order", "verbose"):
                parsed[key] = bool(value)
            elif key == "request_log":
                parsed[key] = str(value or "")
            else:
                try:
                    parsed[key] = type(getattr(self, key))(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{key} must be a number") from None
        if not 0 <= parsed.get("fault_rate", self.fault_rate) <= 1:
            raise ValueError("fault_rate must be between 0 and 1")
        for key, value in parsed.items():
            setattr(self, key, value)
        return self

    def copy(self):
        return Config().update(asdict(self))

    def to_json(self):
        data = asdict(self)
        limit = data.pop("rate_limit")
        data["rate_limit"] = limit and {"requests": limit[0], "seconds": limit[1]}
        return data
