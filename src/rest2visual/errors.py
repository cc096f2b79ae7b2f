"""One error style for every command: ``rest2visual <command>: error: <file>: <expected, found>``.

The ``rest2visual`` dispatcher (:mod:`rest2visual.cli`) catches every exception of
a subcommand and prints one line through :func:`error_line`, then exits 1; the
traceback is printed only with ``--debug`` or ``REST2VISUAL_DEBUG=1``.

- :class:`Rest2VisualError` (and its subclasses :class:`rest2visual.checks.InputError`,
  :class:`rest2visual.config.ConfigError`): their message already names the file or
  the config key, what was expected and what was found.
- Foreign exceptions that name no file are translated with the file found in the
  traceback (:func:`file_of`): a truncated ``.nii.gz`` (``EOFError``/``zlib.error``
  from gzip under nibabel), a corrupt HDF5 (h5py's ``OSError`` "file signature not
  found"), a full disk (``OSError`` errno 28, or torch's "iostream error" while
  saving; the path and the free space of its file system are given). A file under
  an NSD mirror is also named by its NSD key.
- Anything else: ``rest2visual <command>: error: <type>: <message>`` and a hint to
  rerun with ``--debug``.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import warnings
import zlib
from pathlib import Path

#: environment variable that turns tracebacks on, like ``--debug``
DEBUG_ENV = "REST2VISUAL_DEBUG"
DEBUG_HINT = "(rerun with --debug for the traceback)"


class Rest2VisualError(Exception):
    """A project error: the message names the file (or config key), what was expected
    and what was found; printed as is, without a traceback."""


def debug_enabled(argv: list[str] | None = None) -> bool:
    """``--debug`` among the arguments or ``REST2VISUAL_DEBUG`` set to a true value."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return bool(argv and "--debug" in argv) or env not in ("", "0", "false", "no")


def nsd_key(path: str | os.PathLike) -> str | None:
    """The NSD key of a path inside an NSD mirror (from its ``nsddata*`` folder on), or None.

    >>> nsd_key("resources/nsd/nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5")
    'nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5'
    """
    parts = Path(path).parts
    for i, part in enumerate(parts[:-1]):
        if part.startswith("nsddata"):
            return "/".join(parts[i:])
    return None


def name_file(path: str | os.PathLike) -> str:
    """The file as error messages name it: its path, plus its NSD key when it has one."""
    key = nsd_key(path)
    return f"{path} (NSD key {key})" if key else str(path)


def _frames(exc: BaseException):
    """The frames of the exception's traceback, outermost first."""
    tb = exc.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _as_path(value) -> str | None:
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if isinstance(value, (str, os.PathLike)) and str(value):
        return str(value)
    return None


def file_of(exc: BaseException, *, writing: bool = False) -> str | None:
    """The file an exception is about: ``exc.filename``, else the innermost file that a
    reader (gzip, nibabel, h5py) or, with ``writing``, an atomic writer had open in
    the traceback; None when none is found."""
    if isinstance(exc, OSError) and _as_path(exc.filename):
        return _as_path(exc.filename)
    found = None
    for frame in _frames(exc):
        module = frame.f_globals.get("__name__", "")
        local = frame.f_locals
        path = None
        if module.startswith("h5py") and frame.f_code.co_name in ("make_fid", "__init__"):
            path = _as_path(local.get("name"))
        elif module.startswith("nibabel") or module in ("gzip", "indexed_gzip"):
            owner = local.get("self")
            for attr in ("name", "fobj", "filename"):
                with warnings.catch_warnings():  # gzip.GzipFile.filename is deprecated
                    warnings.simplefilter("ignore", DeprecationWarning)
                    value = getattr(owner, attr, None)
                path = _as_path(value) or _as_path(getattr(value, "name", None))
                if path and os.path.exists(path):
                    break
                path = None
            path = path or _as_path(local.get("filename"))
        elif writing and module.startswith("rest2visual"):
            # a writer's temporary file of rest2visual.atomic (".name.tmp-…"): its target
            path = next((_atomic_target(v) for v in local.values() if _atomic_target(v)), None)
            path = path or (_as_path(local.get("path")) if module == "rest2visual.atomic" else None)
        if path and (writing or os.path.exists(path)):
            found = path
    return found


def _raised_by_us(exc: BaseException) -> bool:
    """Whether the innermost frame of the traceback is rest2visual code (a deliberate message)."""
    frames = list(_frames(exc))
    return bool(frames) and frames[-1].f_globals.get("__name__", "").startswith("rest2visual")


def _atomic_target(value) -> str | None:
    """The final path of an atomic writer's temporary path (``.x.tmp-<pid>-<hex>.nii.gz``
    → ``x.nii.gz``), or None for anything else."""
    import re

    if not isinstance(value, (str, os.PathLike)):
        return None
    path = Path(value)
    match = re.fullmatch(r"\.(.+?)\.tmp-[^.]*(.*)", path.name)
    return str(path.with_name(match.group(1) + match.group(2))) if match else None


def free_space(path: str | os.PathLike) -> str:
    """Free space of the file system holding ``path`` (its nearest existing folder)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free / 1e9:,.2f} GB free"


def describe(exc: BaseException) -> str:
    """The message of ``exc`` in the one style, without the ``rest2visual <command>:`` prefix."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or (
            isinstance(exc, RuntimeError) and ("iostream error" in text or "write failed" in text)):
        path = file_of(exc, writing=True)
        where = name_file(path) if path else "an output file"
        cause = "no space left on device" if isinstance(exc, OSError) else (
            f"writing failed ({text}; a full disk is the usual cause)")
        space = free_space(path) if path else "free space unknown"
        return f"{where}: expected room to write it, found {cause}; {space} on its file system"
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        path = file_of(exc)
        return (f"{name_file(path) if path else 'a gzip-compressed input'}: expected a complete "
                f"gzip stream, found a truncated or corrupt file ({text})")
    if isinstance(exc, OSError) and any(s in text for s in (
            "file signature not found", "truncated file", "bad object header", "bad symbol table",
            "Unable to synchronously open file", "Unable to open file")):
        path = file_of(exc)
        return f"{name_file(path) if path else 'an HDF5 input'}: expected an HDF5 file, found {text}"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"{name_file(os.fsdecode(exc.filename))}: file not found"
    if isinstance(exc, Rest2VisualError) or isinstance(exc, ValueError) and _raised_by_us(exc):
        return text
    return f"{type(exc).__name__}: {text} {DEBUG_HINT}"


def error_line(command: str, exc: BaseException) -> str:
    """``rest2visual <command>: error: <message>`` for any exception (one line)."""
    return f"rest2visual {command}: error: {describe(exc)}"
