"""Write outputs so that no partial file is ever left under its final name.

Every stage writes through :func:`atomic_path`: the caller writes to a
temporary sibling (same directory, so the final ``os.replace`` is an atomic
rename on POSIX file systems) and the file is renamed only when the block
exits without an exception. An interrupted job (SIGTERM, SIGKILL, node
failure) therefore leaves at most a ``.<name>.tmp-<pid>-<rand>`` file, which
Snakemake never mistakes for a finished target, and which the next write of
the same target removes before it starts (:func:`remove_stale_temporaries`):
Snakemake runs one job per target at a time, so a temporary sibling found
then is a dead writer's (at paper scale a killed pack leaves ~45 GB).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Iterator

TMP_MARK = ".tmp-"


def temporary_sibling(path: str | os.PathLike) -> Path:
    """Return a unique hidden temporary path next to ``path``, keeping its suffixes.

    The suffixes are kept (``x.nii.gz`` → ``.x.tmp-123-ab12.nii.gz``) because
    nibabel and h5py choose the format from the file name.
    """
    path = Path(path)
    name = path.name
    stem, dot, suffixes = name.partition(".")
    tag = f"{TMP_MARK}{os.getpid()}-{secrets.token_hex(3)}"
    return path.with_name(f".{stem}{tag}{dot}{suffixes}")


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """The temporary siblings of ``path`` (:func:`temporary_sibling` names) that exist."""
    path = Path(path)
    stem, dot, suffixes = path.name.partition(".")
    pattern = re.compile(re.escape(f".{stem}{TMP_MARK}") + r"\d+-[0-9a-f]+"
                         + re.escape(f"{dot}{suffixes}"))
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove what interrupted writers of ``path`` left (files or folders); return them.

    Call it only where no other process writes ``path`` at the same time (one
    Snakemake job per target): :func:`atomic_path` does, before it writes.
    """
    removed = stale_temporaries(path)
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched
    (an older complete version, if any, stays in place). Temporary siblings
    left by earlier, killed writers of ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer produced no file for {path}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_nifti(img, path: str | os.PathLike) -> Path:
    """Save a nibabel image atomically to ``path`` and return the path."""
    import nibabel as nib

    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Save a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    plt.close(fig)
    return path
