"""NSD's own func1pt8 → MNI transform (the ``registration: method: nsd`` option).

NSD ships, per subject, ``transforms/func1pt8-to-MNI.nii.gz``: an X×Y×Z×3 map on
the MNI grid (FSL MNI152 1 mm, 182×218×182) whose three values at each MNI
voxel are the **1-based** (MATLAB) voxel coordinates in the subject's func1pt8mm
volume to interpolate from; 9999 marks MNI voxels without a source. NSD applies
it by interpolating the functional data at those coordinates, which is what
:class:`~rest2visual.preprocess.resample.MniResampler` does with the 0-based
coordinates returned here. This path needs no registration and serves to
cross-check the ANTs path on real data.
"""

from __future__ import annotations

import warnings

import numpy as np

from rest2visual.checks import InputError, require_file
from rest2visual.preprocess.seed import voxel_centers_mm

#: NSD's marker of an MNI voxel without a source coordinate
INVALID = 9999
#: the grid NSD's MNI-space files use (FSL MNI152 1 mm)
FSL_1MM_SHAPE = (182, 218, 182)
FSL_1MM_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])


def _map_grid(img, path) -> np.ndarray:
    """The coordinate map's voxel → MNI mm affine.

    NSD's header is trusted when it is an axis-aligned grid; a 1 mm FSL-shaped
    map with any other header is read on the FSL grid (with a warning), since
    that is the grid NSD computed it on.
    """
    affine = np.asarray(img.affine, dtype=float)
    axis_aligned = np.count_nonzero(np.round(affine[:3, :3], 6)) == 3
    if axis_aligned:
        return affine
    if tuple(img.shape[:3]) == FSL_1MM_SHAPE:
        warnings.warn(f"{path}: header affine is not an MNI grid; reading the map on the "
                      "FSL MNI152 1 mm grid", stacklevel=3)
        return FSL_1MM_AFFINE
    raise InputError(f"{path}: header affine is not an axis-aligned MNI grid and the shape "
                     f"{img.shape[:3]} is not FSL's 1 mm grid {FSL_1MM_SHAPE}")


def read_nsd_coordinates(coords_path, target_grid, native_shape=None) -> np.ndarray:
    """NSD coordinate map → 0-based native voxel coordinates on ``target_grid``.

    Parameters
    ----------
    coords_path : NSD ``func1pt8-to-MNI.nii.gz`` (X×Y×Z×3, 1-based, 9999 invalid).
    target_grid : :class:`~rest2visual.preprocess.template.Grid` of the output (MNI).
        Its voxel centres must lie on the map's grid (FSL grids at 1, 2, 4 mm do),
        otherwise the map is interpolated linearly and any neighbour without a
        source makes the target voxel invalid.
    native_shape : the native grid (x, y, z); only used to sanity-check that the
        valid coordinates fall on it.

    Returns
    -------
    (X, Y, Z, 3) float64 array on the target grid, NaN where NSD gives no source.
    """
    import nibabel as nib
    from scipy import ndimage

    path = require_file(coords_path, "NSD coordinate map")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=float)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the NSD coordinate map ({exc})") from exc
    if data.ndim != 4 or data.shape[3] != 3:
        raise InputError(f"{path}: expected an NSD coordinate map X×Y×Z×3, found {data.shape}")
    invalid = np.any((data == INVALID) | ~np.isfinite(data), axis=3)
    coords = np.where(invalid[..., None], np.nan, data - 1.0)

    # target voxel centre (MNI mm) → continuous voxel index of the map
    to_map = np.linalg.inv(_map_grid(img, path))
    pos = voxel_centers_mm(target_grid) @ to_map[:3, :3].T + to_map[:3, 3]
    dims = np.asarray(data.shape[:3])
    if np.any(pos < -1e-6) or np.any(pos > dims - 1 + 1e-6):
        raise InputError(f"{path}: the coordinate map's grid (shape {data.shape[:3]}) does "
                         f"not cover the target MNI grid {target_grid.shape}")
    on_grid = np.allclose(pos, np.round(pos), atol=1e-4)
    if on_grid:
        i, j, k = np.round(pos).astype(int).transpose(3, 0, 1, 2)
        out = coords[i, j, k]
    else:
        where = pos.reshape(-1, 3).T
        filled = np.nan_to_num(coords)
        out = np.stack([ndimage.map_coordinates(filled[..., a], where, order=1, mode="nearest")
                        for a in range(3)], -1)
        touched = ndimage.map_coordinates(invalid.astype(float), where, order=1,
                                          mode="nearest") > 0
        out[touched] = np.nan
        out = out.reshape(tuple(target_grid.shape) + (3,))
    if native_shape is not None:
        valid = out[np.all(np.isfinite(out), axis=-1)]
        # NSD's coordinates stay within its functional volume; one voxel of slack
        # for interpolation, more means the map belongs to another grid
        if valid.size and (np.any(valid.min(0) < -1.0)
                           or np.any(valid.max(0) > np.asarray(native_shape) + 0.0)):
            raise InputError(
                f"{path}: source coordinates span {np.round(valid.min(0) + 1, 1)} to "
                f"{np.round(valid.max(0) + 1, 1)} (1-based), outside the native grid "
                f"{tuple(native_shape)}: is this map for another subject or space?")
    return out
