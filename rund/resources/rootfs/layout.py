"""Where the cache keeps things. Everything sits on one file system so that a build can rename into place.

    images/<key>.erofs   a finished image, exactly slot_bytes long (sparse padding); read-only
    images/<key>.json    what it was built from, its unpadded size and sha256 (for verify())
    pins/<key>/<owner>   one empty file per owner using the image; the directory's mtime is its last use
    locks/<key>          flock: shared while pinning a hit, exclusive while building or evicting
    private/<owner>/     images built for one owner only (not cacheable), deleted at release
    tmp/<name>.lock      held by a running build; tmp/<name>/ is its scratch (swept when the lock is free)
    evict.lock           one evictor at a time
"""

from __future__ import annotations

import os
import re

from .errors import InvalidOwner

# containerd ids are [A-Za-z0-9]+([._-][A-Za-z0-9]+)*; a little more is allowed, never a path separator.
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$")


def check_owner(owner: str) -> str:
    if not isinstance(owner, str) or not _OWNER.match(owner):
        raise InvalidOwner(f"owner {owner!r} must match {_OWNER.pattern}")
    return owner


class CacheLayout:
    def __init__(self, directory: str) -> None:
        self.root = os.path.abspath(directory)
        self.images = f"{self.root}/images"
        self.pins = f"{self.root}/pins"
        self.locks = f"{self.root}/locks"
        self.private = f"{self.root}/private"
        self.tmp = f"{self.root}/tmp"
        self.evict_lock = f"{self.root}/evict.lock"

    def prepare(self) -> None:
        for path in (self.images, self.pins, self.locks, self.private, self.tmp):
            os.makedirs(path, mode=0o755, exist_ok=True)

    def image(self, key: str) -> str:
        return f"{self.images}/{key}.erofs"

    def meta(self, key: str) -> str:
        return f"{self.images}/{key}.json"

    def pin_dir(self, key: str) -> str:
        return f"{self.pins}/{key}"

    def pin(self, key: str, owner: str) -> str:
        return f"{self.pins}/{key}/{owner}"

    def lock(self, key: str) -> str:
        return f"{self.locks}/{key}"

    def owner_dir(self, owner: str) -> str:
        return f"{self.private}/{owner}"
