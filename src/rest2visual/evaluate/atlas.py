"""The visual-cortex ROI atlas (labels 1..5 = V1..V5) on the evaluation's MNI grid.

Sources, first that applies:

1. a NIfTI given in the config (``evaluate.roi_atlas``): labels 1..5 = V1..V5,
   any MNI grid;
2. the simulated NSD's own atlas (``<simulate.root>/truth/roi_atlas.nii.gz``),
   the areas that drove its simulated responses;
3. on real data, the Juelich histological atlas (FSL's maximum-probability
   map, thresholded at 25 %, 2 mm) through :func:`nilearn.datasets.fetch_atlas_juelich`
   (downloads once into nilearn's data folder; needs the network the first
   time). Its regions "GM Visual cortex V1 BA17", "… V2 BA18", "… V3V", "… V4"
   and "… V5" become labels 1..5 (both hemispheres).

The atlas is resampled with nearest-neighbour interpolation (labels stay
labels) onto the target grid — the MNI brain mask's — and restricted to
that mask, so every labelled voxel is an evaluated voxel. Output: an int16
``dseg`` NIfTI, 0 = background.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Mapping, Sequence

import numpy as np

from rest2visual.checks import InputError, load_nifti
from rest2visual.evaluate.metrics import VISUAL_ROIS

#: the Juelich map the pipeline uses (25 % threshold: no voxel of < 25 % probability)
JUELICH_ATLAS = "maxprob-thr25-2mm"
_JUELICH_VISUAL = re.compile(r"Visual cortex V([1-5])(?!\d)")


def juelich_visual_labels(names: Sequence[str]) -> dict[int, int]:
    """{Juelich label value: V-number 1..5} for the visual-cortex entries of ``names``.

    ``names[i]`` is the name of label value ``i`` (nilearn's convention, with
    "Background" at 0). Lateralised names ("… V1 BA17 L") map like the others.
    Raises InputError when an area V1..V5 is missing from the names.
    """
    mapping = {}
    for value, name in enumerate(names):
        hit = _JUELICH_VISUAL.search(str(name))
        if hit:
            mapping[value] = int(hit.group(1))
    missing = sorted(set(VISUAL_ROIS) - set(mapping.values()))
    if missing:
        raise InputError(f"Juelich atlas labels lack visual areas {['V%d' % m for m in missing]}; "
                         f"expected names like 'GM Visual cortex V1 BA17' among {len(names)} labels")
    return mapping


def relabel(labels: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """int16 array with ``mapping[v]`` where ``labels == v`` and 0 elsewhere."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.int16)
    for value, new in mapping.items():
        out[labels == value] = new
    return out


def resample_labels(img, shape: Sequence[int], affine: np.ndarray):
    """A label image resampled (nearest neighbour) onto ``shape``/``affine`` as int16."""
    import nibabel as nib
    from nilearn.image import resample_img

    data = np.rint(np.asarray(img.dataobj)).astype(np.int16)
    src = nib.Nifti1Image(data, img.affine)
    if tuple(img.shape[:3]) == tuple(shape) and np.allclose(img.affine, affine, atol=1e-3):
        return src
    out = resample_img(src, target_affine=np.asarray(affine), target_shape=tuple(shape),
                       interpolation="nearest", force_resample=True, copy_header=True)
    return nib.Nifti1Image(np.rint(np.asarray(out.dataobj)).astype(np.int16), out.affine)


def fetch_juelich_visual(data_dir=None):
    """The Juelich visual areas as a label image (1..5 = V1..V5) on the atlas's own 2 mm grid."""
    import nibabel as nib
    from nilearn.datasets import fetch_atlas_juelich

    try:
        atlas = fetch_atlas_juelich(JUELICH_ATLAS, data_dir=data_dir, verbose=0)
    except Exception as exc:  # no network on a compute node, a broken download, ...
        raise InputError(f"cannot fetch the Juelich atlas ({exc}); set evaluate.roi_atlas to a "
                         "NIfTI of V1..V5 labels, or fetch it once on a machine with internet "
                         "(nilearn caches it)") from exc
    img = atlas.maps if hasattr(atlas.maps, "affine") else nib.load(atlas.maps)
    mapping = juelich_visual_labels(atlas.labels)
    return nib.Nifti1Image(relabel(np.asarray(img.dataobj), mapping), img.affine)


def visual_atlas(mask_img, source=None, *, data_dir=None):
    """The V1..V5 atlas on the grid of ``mask_img`` (the MNI brain mask), labels outside it 0.

    ``source``: a label NIfTI path (config override or the simulated atlas) or
    None for the Juelich atlas. Labels of a given file must lie in 0..5.
    Raises InputError if an area has no voxel inside the mask after resampling.
    """
    import nibabel as nib

    if source is None:
        img, what = fetch_juelich_visual(data_dir), f"Juelich {JUELICH_ATLAS}"
    else:
        img = load_nifti(source, ndim=3, what="visual ROI atlas")
        what = str(source)
        values = np.unique(np.rint(np.asarray(img.dataobj))).astype(np.int64)
        bad = values[(values < 0) | (values > max(VISUAL_ROIS))]
        if bad.size:
            raise InputError(f"{source}: label values {bad.tolist()[:10]} outside 0..5 "
                             "(expected 0 background, 1..5 = V1..V5)")
    out = resample_labels(img, mask_img.shape[:3], mask_img.affine)
    data = np.asarray(out.dataobj).copy()
    data[~(np.asarray(mask_img.dataobj) > 0)] = 0
    empty = [name for label, name in VISUAL_ROIS.items() if not np.any(data == label)]
    if empty:
        raise InputError(f"{what}: areas {empty} have no voxel inside the brain mask on the "
                         f"{mask_img.shape[:3]} grid (wrong space, or a grid too coarse?)")
    return nib.Nifti1Image(data.astype(np.int16), mask_img.affine)


def main(argv: list[str] | None = None) -> int:
    from rest2visual.atomic import save_nifti

    parser = argparse.ArgumentParser(prog="rest2visual roi-atlas", description=__doc__.split("\n")[0])
    parser.add_argument("--mask", required=True, help="MNI brain mask NIfTI (the target grid)")
    parser.add_argument("--atlas", help="label NIfTI (1..5 = V1..V5); default: Juelich via nilearn")
    parser.add_argument("--data-dir", help="nilearn data folder for the Juelich download")
    parser.add_argument("--out", required=True, help="output dseg NIfTI (int16 labels)")
    args = parser.parse_args(argv)
    try:
        mask = load_nifti(args.mask, ndim=3, what="MNI brain mask")
        atlas = visual_atlas(mask, args.atlas, data_dir=args.data_dir)
    except InputError as exc:
        print(f"rest2visual roi-atlas: error: {exc}", file=sys.stderr)
        return 1
    save_nifti(atlas, args.out)
    counts = {name: int((np.asarray(atlas.dataobj) == label).sum()) for label, name in VISUAL_ROIS.items()}
    print(f"wrote {args.out}: voxels per area {counts}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
