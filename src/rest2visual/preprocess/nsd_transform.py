"""NSD's own func → MNI transforms (the ``registration: method: nsd`` option).

NSD ships, per subject, ``transforms/func1pt8-to-MNI.nii.gz`` (and
``func1pt0-to-MNI.nii.gz`` for func1mm): an X×Y×Z×3 coordinate map on the FSL
MNI152 1 mm grid (182×218×182, stored like FSL's ``MNI152_T1_1mm``: first voxel
on the right, i.e. the affine ``diag(-1, 1, 1)`` with origin (90, −126, −72) mm)
whose three values at each MNI voxel are the **1-based** (MATLAB) voxel
coordinates in the subject's functional volume to interpolate from; 9999 marks
MNI voxels without a source.

The header NSD writes with these maps is *not* that grid: it is a plain grid
centred on the volume (1 mm, origin −90.5, −108.5, −90.5, no flip). nsdcode
(``nsd_mapdata.m`` / ``nsd_mapdata.py``) never reads it: the target grid is
known from the space. The map is read the same way here: the grid comes from
the shape (which must be one NSD writes), the header is ignored, values are
1-based, 9999 is invalid. Trusting the header would put the data on the wrong
grid and flip left and right.

:class:`~rest2visual.preprocess.resample.MniResampler` applies the 0-based
coordinates returned here. This path needs no registration and serves to
cross-check the ANTs path on real data.

The opposite direction, ``transforms/MNI-to-func1pt8.nii.gz``, is the same kind of
map on the subject's functional grid, its values 1-based coordinates in the FSL 1 mm
MNI array (:func:`read_nsd_mni_coordinates`, used by
:class:`~rest2visual.preprocess.native.NativeResampler` for the decoding bridge).
"""

from __future__ import annotations

import numpy as np

from rest2visual.checks import InputError, require_file
from rest2visual.preprocess.seed import voxel_centers_mm

#: NSD's marker of an MNI voxel without a source coordinate
INVALID = 9999
#: the grid NSD's MNI-space files use (FSL MNI152 1 mm), known from the shape as in nsdcode
FSL_1MM_SHAPE = (182, 218, 182)
FSL_1MM_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
#: the header NSD writes on its MNI coordinate maps (ignored when reading): 1 mm, centred
NSD_MNI_HEADER_AFFINE = np.array([[1.0, 0, 0, -90.5], [0, 1, 0, -108.5], [0, 0, 1, -90.5],
                                  [0, 0, 0, 1]])
#: grids of NSD's coordinate maps by their shape (only MNI targets are read here)
NSD_TARGET_GRIDS = {FSL_1MM_SHAPE: FSL_1MM_AFFINE}


def read_nsd_coordinates(coords_path, target_grid, native_shape=None) -> np.ndarray:
    """NSD coordinate map → 0-based native voxel coordinates on ``target_grid``.

    Parameters
    ----------
    coords_path : NSD ``func1pt8-to-MNI.nii.gz`` or ``func1pt0-to-MNI.nii.gz``
        (182×218×182×3 on the FSL 1 mm grid, 1-based, 9999 invalid; header ignored).
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
    from scipy import ndimage

    path, img = _open_map(coords_path)
    shape = tuple(img.shape)
    # nsdcode knows the target grid from the space; the shape tells it here, never the header
    map_affine = NSD_TARGET_GRIDS.get(shape[:3])
    if map_affine is None:
        raise InputError(
            f"{path}: expected NSD's MNI coordinate map of shape "
            f"{'×'.join(map(str, FSL_1MM_SHAPE))}×3 (FSL MNI152 1 mm, the grid nsdcode assumes; "
            f"the header is not used), found {'×'.join(map(str, shape))}")
    data, invalid, coords = _map_values(path, img)

    # target voxel centre (MNI mm) → continuous voxel index of the map
    to_map = np.linalg.inv(map_affine)
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


def read_nsd_mni_coordinates(coords_path, native_shape, mni_grid) -> np.ndarray:
    """NSD's MNI → func coordinate map → 0-based voxel coordinates on ``mni_grid``.

    Parameters
    ----------
    coords_path : NSD ``MNI-to-func1pt8.nii.gz`` (or ``MNI-to-func1pt0``): X×Y×Z×3 on the
        subject's functional grid; at each native voxel the **1-based** coordinates in
        the FSL MNI152 1 mm array (stored first voxel right, :data:`FSL_1MM_AFFINE`, the
        same convention as the func → MNI map; nsdcode's volume-to-volume case reads both
        maps alike), 9999 where the voxel has no MNI source.
    native_shape : the subject's functional grid (x, y, z) the map must be on.
    mni_grid : :class:`~rest2visual.preprocess.template.Grid` of the MNI data to sample
        (e.g. the pack's 2 mm grid); FSL 1 mm coordinates are converted through the
        affines, so any MNI grid works.

    Returns
    -------
    (x, y, z, 3) float64: the continuous voxel index on ``mni_grid`` of each native voxel
    (NaN where NSD gives no source).
    """
    path, img = _open_map(coords_path)
    shape = tuple(img.shape)
    if shape[:3] != tuple(native_shape):
        raise InputError(f"{path}: expected NSD's MNI → func map on the native grid "
                         f"{tuple(native_shape)} × 3, found {shape}")
    _, _, fsl_ijk = _map_values(path, img)
    fsl_to_grid = np.linalg.inv(np.asarray(mni_grid.affine, dtype=float)) @ FSL_1MM_AFFINE
    return fsl_ijk.astype(np.float64) @ fsl_to_grid[:3, :3].T + fsl_to_grid[:3, 3]


def _open_map(coords_path):
    """(path, nibabel image) of an NSD coordinate map X×Y×Z×3, or InputError."""
    import nibabel as nib

    path = require_file(coords_path, "NSD coordinate map")
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise InputError(f"{path}: cannot read the NSD coordinate map ({exc})") from exc
    if len(img.shape) != 4 or img.shape[3] != 3:
        raise InputError(f"{path}: expected an NSD coordinate map X×Y×Z×3, "
                         f"found {tuple(img.shape)}")
    return path, img


def _map_values(path, img):
    """(values float32, invalid (X, Y, Z) bool, 0-based coordinates with NaN where invalid)."""
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the NSD coordinate map ({exc})") from exc
    invalid = np.any((data == INVALID) | ~np.isfinite(data), axis=3)
    return data, invalid, np.where(invalid[..., None], np.float32(np.nan), data - np.float32(1.0))
