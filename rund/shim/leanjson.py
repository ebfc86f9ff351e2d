"""JSON for the thin `start` without the `json` package: its decoder imports `re` (with `enum` and more), ~6 ms of
CPU in a process that lives ~10 ms. The same C scanner and encoder `json` itself uses (`_json`), with json.loads'
and json.dumps' defaults, so the text in and the objects out are the same.
"""
from __future__ import annotations

import _json

_WHITESPACE = " \t\n\r"


class _Context:
    """What _json's scanner reads off json.decoder.JSONDecoder: its defaults."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


_scan = _json.make_scanner(_Context())


def _unencodable(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def loads(data: bytes | str):
    """json.loads of one document (bytes are UTF-8); ValueError if it is not one."""
    text = data.decode() if isinstance(data, (bytes, bytearray)) else data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        obj, end = _scan(text, start)
    except StopIteration:
        raise ValueError("not a JSON document") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError("extra data after the JSON document")
    return obj


def dumps(obj) -> str:
    """json.dumps(obj, separators=(",", ":"))."""
    encode = _json.make_encoder({}, _unencodable, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
    return "".join(encode(obj, 0))
