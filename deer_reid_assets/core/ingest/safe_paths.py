"""Walking a photo folder safely, the same way everywhere (upload sensor, folder imports, crop imports).

* Directory symlinks are never descended into; a symlinked folder is refused (it would list photos
  twice or loop), whether it points inside or outside.
* A symlink whose fully resolved target lies outside the folder is refused with its target as the
  reason, and never read.
* A symlinked *file* that stays inside the folder is the file it points at.
* Names that are not regular files (fifo, socket, device, broken link) are refused; so are folders
  that cannot be listed. Hidden names (leading ``.``) and temp suffixes are skipped silently.
"""

from __future__ import annotations

import os
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path

TEMP_SUFFIXES = {".part", ".tmp", ".partial", ".crdownload", ".download", ".filepart", ".swp"}
UNKNOWN_CAMERA = "unknown"


@dataclass
class Seen:
    rel: str  # relative to the walked root, posix style
    camera: str  # its top-level folder ("unknown" for files in the root)
    size: int
    mtime_ns: int


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def link_problem(path: Path, root: Path) -> str | None:
    """Why the single file ``path`` (under ``root``) may not be read, or None: the same rule as
    :func:`walk_photos` for a name given explicitly (a sensor batch, a manual ``files`` list)."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(path)
    if not inside(target, real_root):
        return f"symlink points outside the folder (-> {target})" if os.path.islink(path) or target != os.path.abspath(path) \
            else "outside the folder"
    if os.path.isdir(target):
        return "a folder, not a photo"
    return None


def walk_photos(root: str, found: list[Seen], rejected: dict[str, str], suffixes: set[str],
                label: str = "folder") -> None:
    """Collect candidate photos (names ending in ``suffixes``, any case) under ``root`` (already
    resolved) into ``found``; refused names go to ``rejected`` with the reason."""
    stack: list[tuple[str, str, str | None]] = [(root, "", None)]  # (abs dir, rel prefix, camera)
    while stack:
        directory, prefix, camera = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = list(it)
        except OSError as e:
            if prefix:  # the root itself is checked by the caller
                rejected[prefix.rstrip("/")] = f"folder cannot be listed: {e.strerror or e}"
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue  # hidden file or folder
            rel = prefix + name
            try:
                is_link = entry.is_symlink()
                if is_link:
                    target = os.path.realpath(entry.path)
                    if not inside(target, root):
                        rejected[rel] = f"symlink points outside the {label} (-> {target})"
                        continue
                    if os.path.isdir(target):
                        rejected[rel] = f"symlinked folder inside the {label} is not followed"
                        continue
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, rel + "/", camera if camera is not None else name))
                    continue
            except OSError as e:
                rejected[rel] = f"cannot inspect: {e.strerror or e}"
                continue

            suffix = os.path.splitext(name.lower())[1]
            if suffix in TEMP_SUFFIXES or suffix not in suffixes:
                continue
            try:
                st = entry.stat()  # follows an inside file link, checked above
            except FileNotFoundError:
                if is_link:
                    rejected[rel] = "broken symlink"
                continue  # vanished since listed
            except OSError as e:
                rejected[rel] = f"cannot stat: {e.strerror or e}"
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                rejected[rel] = "not a regular file"
                continue
            found.append(Seen(rel, camera if camera is not None else UNKNOWN_CAMERA, st.st_size, st.st_mtime_ns))
