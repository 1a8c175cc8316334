"""Files AMORE creates in shared directories: group permissions like the directory's, atomic JSON.

Pure standard library: the context-file worker (in the user's Python) uses it too.
"""
from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path


def share_like_dir(path, dir_path=None) -> bool:
    """Give a file or directory we created the group access its directory grants.

    If ``dir_path`` (default: the parent of ``path``) is group-writable -- a proposal's shared
    ``usr/Shared/amore`` -- ``path`` becomes group-readable and -writable (directories also
    group-searchable and setgid), and gets the directory's group when it does not have it
    already (only possible if we are a member of it; in setgid directories the kernel has
    done so). Permissions for others are never widened; nothing happens in a directory that
    is not group-writable, where the user's umask decides. This replaces ``chmod 777`` and
    ``umask(0)`` tricks. Errors (e.g. a file of another user) are ignored.

    Returns True if the mode or group was changed.
    """
    path = Path(path)
    try:
        dst = os.stat(dir_path if dir_path is not None else path.parent)
        if not dst.st_mode & stat.S_IWGRP:
            return False
        st = os.stat(path)
        changed = False
        if st.st_gid != dst.st_gid:
            try:
                os.chown(path, -1, dst.st_gid)
                changed = True
            except OSError:
                pass
        want = st.st_mode | stat.S_IRGRP | stat.S_IWGRP
        if stat.S_ISDIR(st.st_mode):
            want |= stat.S_IXGRP | (dst.st_mode & stat.S_ISGID)
        if stat.S_IMODE(want) != stat.S_IMODE(st.st_mode):
            os.chmod(path, stat.S_IMODE(want))
            changed = True
        return changed
    except OSError:
        return False


def restrict_umask(directory=None) -> int:
    """Make sure files AMORE creates from now on are never world-writable, and group-writable
    only in a group-shared ``directory`` (a group-writable one; :func:`share_like_dir` then
    grants the group access), whatever umask the user has (even ``umask 000``). Only adds bits
    to the umask. Returns the previous umask."""
    extra = 0o002
    if directory is not None:
        try:
            if not os.stat(directory).st_mode & stat.S_IWGRP:
                extra |= 0o020
        except OSError:
            pass
    old = os.umask(0)
    os.umask(old | extra)
    return old


def write_json_atomic(path: Path, data: dict | list, mode: int = 0o666,
                      compact: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers see the old or
    the new content, never a part. The file gets ``mode`` less the umask (not mkstemp's
    0600), then :func:`share_like_dir`. ``compact``: no indentation or spaces (quicker for
    big files no one reads by eye)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as f:
            if compact:
                f.write(json.dumps(data, separators=(",", ":")))
            else:
                json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        share_like_dir(tmp, path.parent)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


