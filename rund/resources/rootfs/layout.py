"""Where the cache keeps things. Everything sits on one file system so that a build can rename into place.

Like runc's state, the cache is root's alone: directories 0700, files 0600 (images 0400). Image contents are the
tenants' files, and pins name who runs what.

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
import stat

from .errors import InvalidOwner

DIR_MODE = 0o700
FILE_MODE = 0o600
IMAGE_MODE = 0o400      # QEMU maps images read-only; nobody should write a shared image

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
        os.makedirs(self.root, mode=DIR_MODE, exist_ok=True)
        if os.stat(self.root).st_mode & 0o077:
            tighten(self.root)      # a cache made before it was private (or by hand): once, then the root is 0700
        for path in (self.images, self.pins, self.locks, self.private, self.tmp):
            os.makedirs(path, mode=DIR_MODE, exist_ok=True)

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


def tighten(root: str) -> None:
    """Take group and other bits off everything under `root`, the root itself last (its mode says it is done)."""
    for top, dirs, files in os.walk(root, topdown=False):
        for name in dirs + files:
            _strip(os.path.join(top, name))
    _strip(root)


def _strip(path: str) -> None:
    try:
        st = os.lstat(path)
        if st.st_mode & 0o077 and not stat.S_ISLNK(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
    except FileNotFoundError:       # removed meanwhile by an evictor or a sweep
        pass
