"""The calling convention of a decoder command (``evaluate.decoder: command``), defined once.

A decoder command is a command-line template, e.g.::

    python my_decoder.py --betas {input} --which {which} --out {output}

It is split into arguments like a POSIX shell splits a line (:func:`shlex.split`: quotes
group, backslashes escape), then each placeholder is replaced *inside* each argument by its
value, and the argument list runs without a shell (:func:`subprocess.run`). A value is
therefore always one argument, whatever it holds (spaces, quotes, ``$( )``, ``;``): no
config value and no path ever reaches a shell. Other braces are left as written
(``python -c "d = {}"`` works).

Placeholders (all three required, so that the command cannot silently ignore one):

- ``{input}``: the decoding bridge's HDF5 of one subject and protocol
  (:mod:`rest2visual.decode.native_betas`);
- ``{which}``: ``predicted`` or ``measured``: the command decodes ``/betas_{which}``,
  (n_trials, n_voxels) float32 betas z-scored per session (``/psc/betas_{which}`` in %
  signal change), the image of each row in ``/trials/nsd_id`` (0-based 73k ids);
- ``{output}``: an existing, empty folder; the command writes one RGB (or grayscale) PNG
  per bridge row there, named by the 0-based row, ``00000.png``, ``00001.png``, …
  (:func:`png_name`), all of one size.
"""

from __future__ import annotations

import re
import shlex

#: the placeholders of a decoder command, in the order the docs list them
FIELDS = ("input", "which", "output")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(FIELDS) + r")\}")


def png_name(row: int) -> str:
    """The PNG a decoder command writes for bridge row ``row`` (0-based): ``00012.png``."""
    return f"{row:05d}.png"


def parse_template(template: str) -> list[str]:
    """The template's arguments (shell-like split); ValueError naming what is wrong.

    >>> parse_template("python 'my decoder.py' {input} --which={which} -o {output}")
    ['python', 'my decoder.py', '{input}', '--which={which}', '-o', '{output}']
    """
    try:
        args = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"expected a command line, found {template!r} ({exc})") from None
    if not args:
        raise ValueError("expected a command line, found an empty one")
    found = {m for a in args for m in _PLACEHOLDER.findall(a)}
    missing = [f"{{{f}}}" for f in FIELDS if f not in found]
    if missing:
        raise ValueError(f"expected the placeholders {{input}}, {{which}} and {{output}}, "
                         f"found no {', '.join(missing)} in {template!r}")
    if _PLACEHOLDER.search(args[0]):
        raise ValueError(f"expected a program before the placeholders, found {args[0]!r} first")
    return args


def command_argv(template: str, **values: str) -> list[str]:
    """The argument list to run: ``template`` split, each placeholder replaced by its value.

    ``values``: input, which, output (str or path). Each value stays inside the argument
    that held its placeholder, as written, so it is never re-split or interpreted.

    >>> command_argv("dec {input} --out={output} {which}", input="a b.h5", which="measured",
    ...              output="o; rm -rf x")
    ['dec', 'a b.h5', '--out=o; rm -rf x', 'measured']
    """
    missing = set(FIELDS) - set(values)
    if missing:
        raise TypeError(f"command_argv: values for {sorted(missing)} missing")
    text = {k: str(v) for k, v in values.items()}
    return [_PLACEHOLDER.sub(lambda m: text[m.group(1)], arg) for arg in parse_template(template)]
