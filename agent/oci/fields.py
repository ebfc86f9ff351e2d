"""A reader over a decoded JSON object that names the offending field in every error."""
from __future__ import annotations

import json

from ..errors import InvalidArgument

_MISSING = object()


def decode_document(raw: bytes, what: str) -> "Fields":
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(what, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(what, "must be a JSON object")
    return Fields(data, "")


class Fields:
    """Typed access to one JSON object; `path` is its dotted location in the document."""

    def __init__(self, data: dict, path: str):
        self.data = data
        self.path = path

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, required: bool):
        value = self.data.get(key, _MISSING)
        if value is None:
            value = _MISSING
        if value is _MISSING and required:
            raise InvalidArgument(self.name(key), "is required")
        return value

    def obj(self, key: str, required: bool = False) -> "Fields | None":
        value = self._get(key, required)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            raise InvalidArgument(self.name(key), "must be an object")
        return Fields(value, self.name(key))

    def str(self, key: str, default: str = "", required: bool = False) -> str:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise InvalidArgument(self.name(key), "must be a string")
        return value

    def bool(self, key: str, default: bool = False) -> bool:
        value = self._get(key, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise InvalidArgument(self.name(key), "must be a boolean")
        return value

    def int(self, key: str, default: int | None = None, required: bool = False,
            minimum: int | None = None, maximum: int | None = None) -> int | None:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        return check_int(value, self.name(key), minimum, maximum)

    def list(self, key: str, required: bool = False) -> list[tuple[str, object]]:
        """The items of a list with their names, e.g. ('mounts[2]', {...})."""
        value = self._get(key, required)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            raise InvalidArgument(self.name(key), "must be a list")
        return [(f"{self.name(key)}[{i}]", item) for i, item in enumerate(value)]

    def obj_list(self, key: str, required: bool = False) -> list["Fields"]:
        items = []
        for name, item in self.list(key, required):
            if not isinstance(item, dict):
                raise InvalidArgument(name, "must be an object")
            items.append(Fields(item, name))
        return items

    def str_list(self, key: str, required: bool = False) -> tuple[str, ...]:
        items = []
        for name, item in self.list(key, required):
            if not isinstance(item, str):
                raise InvalidArgument(name, "must be a string")
            items.append(item)
        return tuple(items)

    def str_map(self, key: str) -> dict[str, str]:
        value = self._get(key, False)
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            raise InvalidArgument(self.name(key), "must be an object")
        for k, v in value.items():
            if not isinstance(v, str):
                raise InvalidArgument(f"{self.name(key)}.{k}", "must be a string")
        return dict(value)


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(name, "must be an integer")
    if minimum is not None and value < minimum:
        raise InvalidArgument(name, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(name, f"must be <= {maximum}, got {value}")
    return value


def check_absolute(path: str, name: str) -> str:
    if not path.startswith("/"):
        raise InvalidArgument(name, f"must be an absolute path, got {path!r}")
    if "\0" in path:
        raise InvalidArgument(name, "must not contain NUL")
    return path
