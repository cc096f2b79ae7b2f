"""The ``rest2visual`` command: one subcommand per workflow stage.

Each subcommand lives in its stage's module as ``main(argv) -> int`` with its own
argparse parser; this dispatcher imports it lazily, so preprocessing commands
never import torch.

Errors of every subcommand end here (:mod:`rest2visual.errors`): one line
``rest2visual <command>: error: <file>: <expected, found>`` on stderr and exit
status 1; the traceback only with ``--debug`` (anywhere on the command line) or
``REST2VISUAL_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import sys
import traceback

from rest2visual.errors import debug_enabled, error_line

#: subcommand → "module:function" (the function takes argv and returns an exit code)
COMMANDS = {
    "simulate-nsd": ("rest2visual.nsd.simulate.cli:main",
                     "write a simulated NSD (NSD's keys and formats) plus its ground truth"),
    "check-nsd": ("rest2visual.nsd.check:main",
                  "check every NSD key a configuration needs, from headers only, before compute"),
    "download": ("rest2visual.nsd.download:main",
                 "download NSD keys from S3 anonymously, verified and atomic"),
    "config-docs": ("rest2visual.config:main",
                    "print the configuration reference (Markdown) from the schema"),
    "plan": ("rest2visual.plan:main",
             "print the jobs, download size and compute estimate of a configuration"),
    "template": ("rest2visual.preprocess.template:main",
                 "write the MNI152 template and brain mask on the target grid"),
    "register": ("rest2visual.preprocess.registration:main",
                 "register a subject's anatomy to MNI152 with ANTs"),
    "crosscheck-registration": ("rest2visual.preprocess.crosscheck:main",
                                "MNI distance between the ANTs and NSD registrations per subject"),
    "warp-to-mni": ("rest2visual.preprocess.resample:main",
                    "resample a native 3D/4D image onto the MNI grid through a registration"),
    "rest-map": ("rest2visual.preprocess.rest_map:main",
                 "PCC seed connectivity z-map of one session's rest runs, in MNI"),
    "rest-quality": ("rest2visual.preprocess.rest_quality:main",
                     "rest-map reliability per recipe: test-retest, between-subject, identification"),
    "evoked": ("rest2visual.preprocess.evoked:main",
               "one session's trial betas scaled, in MNI, brain-masked"),
    "pack": ("rest2visual.dataset.pack:main", "pack (rest map, image, beta) triplets into HDF5"),
    "validate-pack": ("rest2visual.dataset.validate:main", "check a triplet pack"),
    "splits": ("rest2visual.dataset.splits:main", "write the split files of every protocol"),
    "embed-images": ("rest2visual.model.embeddings:main",
                     "cache frozen image-encoder embeddings of the packed images"),
    "train": ("rest2visual.model.train:main", "train Rest2Visual on a pack and a split"),
    "predict": ("rest2visual.model.predict:main",
                "predict evoked MNI beta maps from a rest map (or run) and images"),
    "evaluate": ("rest2visual.evaluate.run:main",
                 "metrics, baselines and ablations on a split's test rows"),
    "roi-atlas": ("rest2visual.evaluate.atlas:main",
                  "visual ROI atlas (V1–V5) on the MNI grid"),
    "figures": ("rest2visual.figures.make:main", "draw the paper's figures"),
    "to-native": ("rest2visual.decode.native_betas:main",
                  "predicted and measured betas → native nsdgeneral voxels for image decoders"),
    "reconstruct": ("rest2visual.decode.decoders:main",
                    "reconstruct the seen images from bridge betas with a decoder (command, MindEye2)"),
    "table2": ("rest2visual.decode.table2:main",
               "Table 2: image metrics of reconstructions from predicted vs measured betas"),
    "reconstruction-figure": ("rest2visual.decode.figure:main",
                              "seen images and their reconstructions from measured and predicted betas"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: rest2visual [--debug] COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "rest2visual COMMAND --help shows a command's options; --debug (or",
              "REST2VISUAL_DEBUG=1) prints the traceback of an error."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--debug":  # rest2visual --debug COMMAND ...
        argv = argv[1:] + ["--debug"]
        if not argv[:-1]:
            print(_usage())
            return 0
    if argv[0] in ("-V", "--version"):
        from rest2visual import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rest2visual: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    debug = debug_enabled(argv)
    rest = [a for a in rest if a != "--debug"]
    module, func = COMMANDS[name][0].split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(rest) or 0)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # one line in the one style; the traceback only with --debug
        if debug:
            traceback.print_exc()
        print(error_line(name, exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
