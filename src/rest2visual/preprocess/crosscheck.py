"""Cross-check of the two registrations: where ANTs and NSD's own transform put the brain.

Both transforms are stored as pull-back maps on an MNI grid: for every MNI voxel,
the native voxel coordinate to read from (ANTs: the composed displacement field
of ``rest2visual register``; NSD: ``func1pt8-to-MNI.nii.gz``, read with NSD's
conventions by :mod:`rest2visual.preprocess.nsd_transform`). The cross-check
asks the forward question: for each native brain voxel (NSD's liberal brain
mask), where in MNI does each transform put it, and how far apart (mm) are the
two answers? On real NSD this validates the ANTs path against NSD's own
registration; on the simulated NSD, whose transform files are written from the
known truth, it measures the ANTs path's error.

Inverting a pull-back map at a native point p: the MNI voxel whose source
coordinate is nearest to p (a k-d tree in native mm) starts a Newton iteration
x ← x + J⁻¹(p − C(x)), with C trilinearly interpolated and J its finite-difference
Jacobian at the start voxel. Points the map cannot reach (outside its valid
region) are counted, not guessed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rest2visual.checks import InputError

#: Newton steps after the nearest-voxel start
ITERATIONS = 4
#: a point is reached when the map at the solution is this close to it, native voxels
TOLERANCE_VOXELS = 0.25
COLUMNS = ("subject", "native_brain_voxels", "compared_voxels", "unreached_ants",
           "unreached_nsd", "median_mm", "p95_mm", "max_mm", "native_voxel_mm")


def _sample(coords: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trilinear C(x) at continuous MNI voxel indices x (N, 3); NaN near invalid voxels."""
    from scipy import ndimage

    valid = np.all(np.isfinite(coords), axis=-1)
    filled = np.where(valid[..., None], coords, 0.0)
    out = np.stack([ndimage.map_coordinates(filled[..., a], x.T, order=1, mode="nearest")
                    for a in range(3)], axis=-1)
    weight = ndimage.map_coordinates(valid.astype(float), x.T, order=1, mode="nearest")
    out[weight < 1 - 1e-6] = np.nan
    return out


def _jacobian(coords: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N, 3, 3) d(native coordinate)/d(MNI index) at integer voxels v, central differences
    where both neighbours are valid, one-sided otherwise (NaN when neither is)."""
    shape = np.asarray(coords.shape[:3])
    here = coords[tuple(v.T)]
    jac = np.full((len(v), 3, 3), np.nan)
    for a in range(3):
        step = np.zeros(3, dtype=int)
        step[a] = 1
        up_i, down_i = np.minimum(v + step, shape - 1), np.maximum(v - step, 0)
        up, down = coords[tuple(up_i.T)], coords[tuple(down_i.T)]
        span_up = (up_i - v)[:, a:a + 1]
        span_down = (v - down_i)[:, a:a + 1]
        central = (up - down) / np.maximum(span_up + span_down, 1)
        forward = (up - here) / np.maximum(span_up, 1)
        backward = (here - down) / np.maximum(span_down, 1)
        col = np.where(np.isfinite(central) & (span_up + span_down == 2), central,
                       np.where(np.isfinite(forward) & (span_up == 1), forward, backward))
        jac[:, :, a] = col
    return jac


def invert_coordinate_map(coords: np.ndarray, points: np.ndarray,
                          native_voxel_mm=(1.0, 1.0, 1.0)) -> np.ndarray:
    """MNI voxel indices (N, 3) at which the pull-back map ``coords`` reads ``points``.

    coords : (X, Y, Z, 3) 0-based native voxel coordinate of each MNI voxel, NaN = none.
    points : (N, 3) native voxel coordinates (e.g. the brain voxels' indices).
    native_voxel_mm : native voxel size, to measure distances in mm (k-d tree, tolerance).
    Returns continuous MNI voxel indices, NaN rows for points the map does not reach
    (residual above :data:`TOLERANCE_VOXELS` native voxels after the iterations).
    """
    from scipy.spatial import cKDTree

    scale = np.asarray(native_voxel_mm, dtype=float)
    valid = np.all(np.isfinite(coords), axis=-1)
    where = np.argwhere(valid)
    points = np.asarray(points, dtype=float)
    if not len(where) or not len(points):
        return np.full((len(points), 3), np.nan)
    tree = cKDTree(coords[valid] * scale)
    _, nearest = tree.query(points * scale)
    start = where[nearest]
    jac = _jacobian(coords, start)
    ok = np.all(np.isfinite(jac), axis=(1, 2))
    ok &= np.abs(np.linalg.det(np.where(ok[:, None, None], jac, np.eye(3)))) > 1e-9
    inv = np.linalg.inv(np.where(ok[:, None, None], jac, np.eye(3)))
    x = start.astype(float)
    current = coords[tuple(start.T)]
    for _ in range(ITERATIONS):
        residual = points - current
        step = np.einsum("nij,nj->ni", inv, np.nan_to_num(residual))
        x = np.clip(x + step, 0, np.asarray(coords.shape[:3]) - 1)
        current = _sample(coords, x)
    error = np.linalg.norm((points - current) * scale, axis=1)
    reached = ok & np.isfinite(error) & (error <= TOLERANCE_VOXELS * scale.max())
    x[~reached] = np.nan
    return x


def _to_mm(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


@dataclass(frozen=True)
class CrossCheck:
    """One subject's row of the table (distances in MNI mm)."""

    subject: int
    native_brain_voxels: int
    compared_voxels: int
    unreached_ants: int
    unreached_nsd: int
    median_mm: float
    p95_mm: float
    max_mm: float
    native_voxel_mm: float


def compare_registrations(ants, nsd, brainmask: np.ndarray, subject: int) -> CrossCheck:
    """Per native brain voxel, the MNI distance (mm) between the two transforms' images.

    ants, nsd : :class:`~rest2visual.preprocess.resample.MniResampler` of the same
        native grid and the same MNI grid.
    brainmask : (x, y, z) bool on the native grid.
    """
    if ants.native_shape != nsd.native_shape or ants.target_shape != nsd.target_shape \
            or not np.allclose(ants.target_affine, nsd.target_affine, atol=1e-3):
        raise InputError(f"{ants.source} and {nsd.source}: the two transforms map different "
                         f"grids (native {ants.native_shape} vs {nsd.native_shape}, MNI "
                         f"{ants.target_shape} vs {nsd.target_shape})")
    if brainmask.shape != ants.native_shape:
        raise InputError(f"brain mask of shape {brainmask.shape} is not on the native grid "
                         f"{ants.native_shape}")
    points = np.argwhere(brainmask)
    voxel = np.linalg.norm(ants.native_affine[:3, :3], axis=0)
    at = {name: _to_mm(r.target_affine,
                       invert_coordinate_map(r.source_coordinates(), points, voxel))
          for name, r in (("ants", ants), ("nsd", nsd))}
    reached = {name: np.all(np.isfinite(v), axis=1) for name, v in at.items()}
    both = reached["ants"] & reached["nsd"]
    dist = np.linalg.norm(at["ants"][both] - at["nsd"][both], axis=1)
    stat = (lambda f: float(f(dist)) if dist.size else float("nan"))  # noqa: E731
    return CrossCheck(subject, len(points), int(both.sum()), int((~reached["ants"]).sum()),
                      int((~reached["nsd"]).sum()), stat(np.median),
                      stat(lambda d: np.percentile(d, 95)), stat(np.max),
                      float(np.mean(voxel)))


def write_tables(rows: list[CrossCheck], csv_path, md_path) -> None:
    """The per-subject table as CSV and Markdown (written atomically)."""
    import pandas as pd

    from rest2visual.atomic import atomic_path

    table = pd.DataFrame([asdict(r) for r in rows], columns=list(COLUMNS))
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.3f")
    lines = ["| subject | native brain voxels | compared | median (mm) | p95 (mm) | max (mm) "
             "| native voxel (mm) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| sub-{r.subject:02d} | {r.native_brain_voxels} | {r.compared_voxels} | "
              f"{r.median_mm:.2f} | {r.p95_mm:.2f} | {r.max_mm:.2f} | {r.native_voxel_mm:.2f} |"
              for r in rows]
    text = ("Distance in MNI between where ANTs and NSD's own transform put each native "
            "brain voxel\n\n" + "\n".join(lines) + "\n")
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text(text)


def read_rows(paths) -> list[CrossCheck]:
    """Rows of per-subject CSVs written by :func:`write_tables`."""
    import pandas as pd

    rows = []
    for path in paths:
        for rec in pd.read_csv(path).to_dict("records"):
            rows.append(CrossCheck(**{c: (int(rec[c]) if c in COLUMNS[:5] else float(rec[c]))
                                      for c in COLUMNS}))
    return rows


# --- command line ---------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rest2visual crosscheck-registration",
        description="Distance (MNI mm) between where the ANTs registration and NSD's own "
                    "func→MNI transform put each native brain voxel; or, with --combine, "
                    "the per-subject tables joined.")
    p.add_argument("--subject", type=int, help="NSD subject (1..8)")
    p.add_argument("--composite", help="ANTs composed displacement field (rest2visual register)")
    p.add_argument("--nsd-coords", help="NSD's func1pt8-to-MNI coordinate map")
    p.add_argument("--anat", help="anatomy in functional space (the native grid)")
    p.add_argument("--brainmask", help="NSD's native brain mask")
    p.add_argument("--resolution", type=float, help="MNI grid of the comparison, mm")
    p.add_argument("--qc", help="QC figure: anatomy through each transform (PNG)")
    p.add_argument("--combine", nargs="+", help="per-subject CSVs to join")
    p.add_argument("--csv", required=True)
    p.add_argument("--md", required=True)
    return p


def _subject(args) -> CrossCheck:
    from rest2visual.checks import load_nifti
    from rest2visual.preprocess.resample import MniResampler, warp_to_mni
    from rest2visual.preprocess.template import mni_brain_mask, mni_grid, mni_template

    anat = load_nifti(args.anat, ndim=3, what="anatomy in functional space")
    mask = load_nifti(args.brainmask, ndim=3, shape=anat.shape, affine=anat.affine,
                      what="native brain mask")
    ants = MniResampler.from_composite(args.composite, anat)
    nsd = MniResampler.from_nsd_coordinates(args.nsd_coords, anat, mni_grid(args.resolution))
    row = compare_registrations(ants, nsd, np.asarray(mask.dataobj) > 0, args.subject)
    if args.qc:
        from rest2visual.preprocess.qc import plot_crosscheck_qc

        template = mni_template(args.resolution)
        images = {"ANTs": warp_to_mni(anat, ants), "NSD's transform": warp_to_mni(anat, nsd)}
        plot_crosscheck_qc(images, template, args.qc, mask_img=mni_brain_mask(args.resolution),
                           title=f"sub-{args.subject:02d}: ANTs vs NSD's func→MNI: median "
                                 f"{row.median_mm:.2f} mm, p95 {row.p95_mm:.2f} mm over "
                                 f"{row.compared_voxels} native brain voxels")
    return row


def main(argv: list[str] | None = None) -> int:
    """``rest2visual crosscheck-registration --subject 1 --composite F --nsd-coords M --anat A
    --brainmask B --resolution 2 --qc Q --csv C --md D`` (or ``--combine C1 C2 ... --csv --md``)."""
    args = _parser().parse_args(argv)
    try:
        if args.combine:
            rows = read_rows(args.combine)
        else:
            missing = [o for o in ("subject", "composite", "nsd_coords", "anat", "brainmask",
                                   "resolution") if getattr(args, o) is None]
            if missing:
                raise InputError("missing option(s) " + ", ".join(
                    "--" + m.replace("_", "-") for m in missing))
            rows = [_subject(args)]
        write_tables(rows, args.csv, args.md)
    except (InputError, OSError) as exc:
        print(f"rest2visual crosscheck-registration: error: {exc}", file=sys.stderr)
        return 1
    for r in rows:
        print(f"sub-{r.subject:02d}: median {r.median_mm:.2f} mm, p95 {r.p95_mm:.2f} mm "
              f"({r.compared_voxels} of {r.native_brain_voxels} native brain voxels; not "
              f"reached: ANTs {r.unreached_ants}, NSD {r.unreached_nsd})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
