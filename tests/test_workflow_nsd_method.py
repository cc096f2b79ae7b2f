"""The workflow with ``registration.method: nsd`` on the toy simulated NSD, up to the pack.

The simulated NSD writes NSD's files as NSD does: coordinate maps on FSL's 1 mm grid
with NSD's centred header, ncsnr with NaN outside the brain mask, rest runs with
``xyzt_units`` = 0 and pixdim[4] = 4/3, the design in NSD's layout (stride 750).
This runs the real rules on them: NSD's transform read as nsdcode reads it, NaN kept
from spreading into the MNI ncsnr, the TR taken from the config and logged, and a
pack that validates.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from conftest import run_workflow, toy_config
from rest2visual.dataset.validate import validate_pack

pytestmark = pytest.mark.workflow


def test_nsd_method_runs_to_a_valid_pack(tmp_path):
    config = toy_config(registration={"method": "nsd"})
    run_workflow(tmp_path, config, "--until", "pack_triplets")
    pack = tmp_path / "results/dataset/rest2visual_space-MNI152_res-4_triplets.h5"
    assert validate_pack(pack) == []
    with h5py.File(pack, "r") as h5:
        ncsnr, missing = h5["ncsnr"][()], h5["ncsnr"].attrs["missing_voxels"]
        assert np.array_equal(np.isnan(ncsnr).sum(axis=1), missing)
        assert (missing < 0.05 * ncsnr.shape[1]).all()  # the brain's edge only
        assert np.isfinite(ncsnr[~np.isnan(ncsnr)]).all()
    logs = tmp_path / "results/logs"
    for sub, n in zip(config["nsd"]["subjects"], missing):
        text = (logs / f"evoked/sub-{sub:02d}_ncsnr.log").read_text()
        assert f"{n} of {ncsnr.shape[1]} MNI voxels marked missing" in text
        rest_log = (logs / f"rest/sub-{sub:02d}_ses-21_pcc-zmap.log").read_text()
        assert "TR 1.33318 s from the configured TR of the space" in rest_log
        assert "time unit is 'unknown'" in rest_log and "pixdim[4] = 1.33333" in rest_log
