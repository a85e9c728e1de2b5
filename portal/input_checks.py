"""JSON and header checks that keep out what no database stores (NULs, lone surrogates,
infinite numbers, nesting past `MAX_JSON_DEPTH`): one 400, never a 500, in every API.

Its own module, importing no DRF views: DRF reads `StrictJSONParser` (the default parser)
while `rest_framework.views` is being imported.
"""

import json
import math

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

#: Deeper than any body the portal takes (usage rows, Halo deliveries, processor events are a
#: handful of levels): deeper JSON is refused before anything reads it recursively.
MAX_JSON_DEPTH = 32


class InvalidInput(ParseError):
    """A body or header the portal cannot take as it stands: 400, and nothing is stored."""

    default_code = "invalid"


def text_problem(text):
    """Why `text` cannot be stored as it is (in text or JSON, on SQLite and PostgreSQL), or
    ''. The answer never quotes the text: it may not even be encodable."""
    if "\x00" in text:
        return "contains a NUL character (U+0000), which cannot be stored"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            code = ord(text[error.start])
            return f"contains a lone surrogate (U+{code:04X}), which is not Unicode text"
    return ""


def check_json(value, max_depth=MAX_JSON_DEPTH):
    """Raise `InvalidInput` naming the first place in decoded JSON `value` holding text no
    database stores (in a key or a string), a number JSON cannot hold (an overflowing
    float is infinite), or nesting deeper than `max_depth`. Iterative: never recurses."""
    stack = [(value, 1, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if problem := text_problem(item):
                raise InvalidInput(f"{json_path(path)} {problem}.")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidInput(f"{json_path(path)} is a number too large for JSON.")
        elif isinstance(item, dict | list):
            if depth > max_depth:
                raise InvalidInput(f"The JSON is nested more than {max_depth} levels deep.")
            children = list(item.items() if isinstance(item, dict) else enumerate(item))
            for key, _ in children:
                if isinstance(key, str) and (problem := text_problem(key)):
                    raise InvalidInput(f"A key in {json_path(path)} {problem}.")
            stack.extend((child, depth + 1, (*path, key)) for key, child in reversed(children))
    return value


def json_path(path):
    """`usage[2].organisation` for the path `("usage", 2, "organisation")`."""
    if not path:
        return "The body"
    text = ""
    for key in path:
        if isinstance(key, int):
            text += f"[{key}]"
        elif key.isidentifier() and len(key) <= 40:
            text += f".{key}" if text else key
        else:
            text += f"[{json.dumps(key[:40], ensure_ascii=False)}]"
    return text


def parse_json(body, encoding="utf-8"):
    """Decoded JSON from `body` (bytes), checked by `check_json`; raises `InvalidInput` with
    what is wrong for anything else."""
    try:
        text = body.decode(encoding)
    except (UnicodeDecodeError, LookupError) as error:
        raise InvalidInput(f"The body is not valid JSON: not {encoding} text ({error}).") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidInput(f"The JSON is nested more than {MAX_JSON_DEPTH} levels deep.") from None
    except ValueError as error:  # bad syntax, NaN, or an integer of too many digits
        raise InvalidInput(f"The body is not valid JSON: {error}.") from None
    return check_json(value)


def _refuse_constant(constant):
    raise ValueError(f"{constant} is not a JSON value")


class StrictJSONParser(JSONParser):
    """DRF's JSON parser, answering 400 (never 500) for input no database stores: see
    `parse_json`."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        return parse_json(stream.read() if stream is not None else b"", encoding)


def header_text(request, name, max_length=None):
    """Header `name` stripped ('' when absent); `InvalidInput` when it holds what no
    database stores or control characters, or is longer than `max_length`."""
    value = request.headers.get(name, "").strip()
    problem = text_problem(value)
    if not problem and any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        problem = "contains a control character"
    if problem:
        raise InvalidInput(f"The {name} header {problem}.")
    if max_length is not None and len(value) > max_length:
        raise InvalidInput(f"The {name} header is longer than {max_length} characters.")
    return value
