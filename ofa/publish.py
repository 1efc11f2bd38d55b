"""Writing outputs so that readers see the old version or the new one, never half of either.

Files are written to a temporary name beside them and renamed; a step with several outputs
stages them all first and renames only when every one was written (`publish_files`); a folder
is filled in a staging area outside the outputs and renamed into place (`staging_dir`,
`publish_dir`). Temporary names carry the writer's process id (`.<name>.<pid>.<rand>.tmp`), so
the next run of the same step removes what a killed one left (`clean_stale`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Mapping

STAGING = ".ofa-staging"  # the project's staging area (beside, never inside, DVC outputs)
_TMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")
_STAGED = re.compile(r"(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(folder: Path, name: str | None = None, pattern: re.Pattern = _TMP) -> list[Path]:
    """Remove temporaries in `folder` (of the output `name`, or all) whose writer has died."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for entry in folder.iterdir():
        m = pattern.fullmatch(entry.name)
        if m and (name is None or m["name"] == name) and not _alive(int(m["pid"])):
            _remove(entry)
            gone.append(entry)
    return gone


def _temp_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _normal_mode(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions


def publish_files(writes: Mapping[Path, Callable[[Path], None]]) -> None:
    """Write every output to its temporary name, then rename them all: when one write fails,
    none of the outputs is replaced."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in writes.items():
            path = Path(path)
            tmp = _temp_file(path)
            staged.append((tmp, path))
            write(tmp)
            _normal_mode(tmp)
        for _, path in staged:  # what would fail a rename, before the first one
            if path.is_dir() and not path.is_symlink():
                raise IsADirectoryError(21, "Is a directory", str(path))
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path), then rename over `path`: readers never see half a file."""
    publish_files({Path(path): write})


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def staging_area(folder: Path) -> Path:
    """Where a folder output is filled before it is renamed into place: the project's
    `.ofa-staging/` when the folder lies under the working directory (DVC's project root),
    else a hidden sibling of its parent; never inside the output or its parent folder."""
    folder = Path(folder).absolute()
    cwd = Path.cwd()
    same_fs = os.stat(cwd).st_dev == os.stat(folder.parent).st_dev
    if folder.is_relative_to(cwd) and folder != cwd and same_fs:
        area = cwd / STAGING
    else:
        area = folder.parent.parent / f".{folder.parent.name}{STAGING}"
    area.mkdir(parents=True, exist_ok=True)
    return area


def staging_dir(folder: Path) -> Path:
    """A fresh folder in the staging area, to fill and then `publish_dir` in `folder`'s place;
    what killed runs left for the same folder is removed first."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    area = staging_area(folder)
    clean_stale(area, folder.name, _STAGED)
    return Path(tempfile.mkdtemp(dir=area, prefix=f"{folder.name}.{os.getpid()}."))


def publish_dir(staged: Path, folder: Path) -> None:
    """Put a completely written `staged` folder where `folder` was, by renames only: readers
    see the old folder or the new one, never a mix."""
    folder = Path(folder)
    os.chmod(staged, 0o755)
    old = Path(tempfile.mkdtemp(dir=Path(staged).parent,
                                prefix=f"{folder.name}.{os.getpid()}.")) / "old"
    try:
        if folder.exists():
            os.replace(folder, old)
        os.replace(staged, folder)
    finally:
        shutil.rmtree(old.parent, ignore_errors=True)
