"""Plain TOML, read without tomllib: its imports (typing, re, datetime, string) cost the thin `start` ~15 ms of CPU,
more than the rest of it, to read two settings of a runtime class's config file ([shim] fork_server, state_dir).

Plain: `[table]` headers, `key = value` with a basic or literal string, true, false or a decimal integer, comments
and blank lines: how rund's config files are written. Anything else (arrays, inline tables, floats, dotted or quoted
keys, escapes, multi-line strings, non-ASCII text, a key or table twice) gives None and the caller asks tomllib,
which decides, errors included. What this does return is what tomllib returns for the same text
(rund/tests/test_shim_plaintoml.py compares both on generated documents).
"""
from __future__ import annotations

_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_BLANK = " \t"


def loads(data: bytes) -> dict | None:
    """The document as tomllib.loads(data.decode()) gives it, or None: not plain, ask tomllib."""
    if not data.isascii() or any(b < 0x20 and b not in b"\t\n" or b == 0x7F for b in data):
        return None         # control characters are TOML errors; tomllib words them
    root: dict = {}
    table = root
    for line in data.decode().split("\n"):
        line = line.lstrip(_BLANK)
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            name, _, rest = line[1:].partition("]")
            name = name.strip(_BLANK)
            if not _bare(name) or name in root or not _blank(rest):
                return None
            table = root[name] = {}
            continue
        key, eq, rest = line.partition("=")
        key = key.rstrip(_BLANK)
        if not eq or not _bare(key) or key in table:
            return None
        value = _value(rest.lstrip(_BLANK))
        if value is None:
            return None
        table[key] = value[0]
    return root


def _bare(key: str) -> bool:
    return bool(key) and all(c in _BARE for c in key)


def _blank(rest: str) -> bool:
    """Nothing but blanks and a comment: what may follow a value or a header on its line."""
    rest = rest.lstrip(_BLANK)
    return not rest or rest[0] == "#"


def _value(text: str) -> tuple[str | bool | int] | None:
    """(value,) of a plain value that is all its line holds (but a comment), or None."""
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = text.find(quote, 1)
        body = text[1:end]
        if end < 0 or (quote == '"' and "\\" in body) or not _blank(text[end + 1:]):
            return None     # unterminated, an escape, or more on the line ('''/""" multi-line strings among them)
        return (body,)
    word, rest = text, ""
    for i, c in enumerate(text):
        if c in " \t#":
            word, rest = text[:i], text[i:]
            break
    if not _blank(rest):
        return None
    if word in ("true", "false"):
        return (word == "true",)
    digits = word[1:] if word.startswith("-") else word
    if digits.isdigit() and (digits == "0" and word == "0" or digits[0] != "0"):
        return (int(word),)
    return None
