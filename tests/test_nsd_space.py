"""NSD's functional spaces: func1mm keys, transform and TR, and refused combinations.

func1mm differs from func1pt8mm beyond the folder name (NSD.md): anatomy
``T1_to_func1mm``, transform ``func1pt0-to-MNI``, TR 1.0 s; ``betas_assumehrf``
exists at 1.8 mm only. A dry run of the workflow shows what a func1mm run would read.
"""

from __future__ import annotations

import pytest

from conftest import run_workflow, toy_config
from rest2visual.config import ConfigError, check_config
from rest2visual.nsd import keys

pytestmark = pytest.mark.workflow


def test_keys_per_space():
    assert keys.anatomy_key(1, "func1pt8mm") == \
        "nsddata/ppdata/subj01/func1pt8mm/T1_to_func1pt8mm.nii.gz"
    assert keys.anatomy_key(3, "func1mm") == "nsddata/ppdata/subj03/func1mm/T1_to_func1mm.nii.gz"
    assert keys.func_to_mni_key(2) == "nsddata/ppdata/subj02/transforms/func1pt8-to-MNI.nii.gz"
    assert keys.func_to_mni_key(2, "func1mm") == \
        "nsddata/ppdata/subj02/transforms/func1pt0-to-MNI.nii.gz"
    with pytest.raises(ValueError, match="func2mm"):
        keys.anatomy_key(1, "func2mm")
    nsd = {"space": "func1mm", "tr_s": 1.33318, "tr_s_func1mm": 1.0}
    assert keys.configured_tr(nsd) == (1.0, "nsd.tr_s_func1mm")
    assert keys.configured_tr({**nsd, "space": "func1pt8mm"}) == (1.33318, "nsd.tr_s")


def _s3(method="ants", **nsd):
    return toy_config(nsd={"source": "s3", "endpoint_url": "http://127.0.0.1:9",
                           "subjects": [1], "sessions": [21], **nsd},
                      registration={"method": method})


def test_func1mm_dry_run_plans_its_keys_transform_and_tr(tmp_path):
    ants = run_workflow(tmp_path / "ants", _s3(space="func1mm"), "-n", "-p", check=False)
    assert ants.returncode == 0, ants.stdout[-3000:]
    assert "--anat resources/nsd/nsddata/ppdata/subj01/func1mm/T1_to_func1mm.nii.gz" \
        in ants.stdout
    assert "use TR 1 s from config nsd.tr_s_func1mm" in ants.stdout
    assert "--tr 1.0 " in ants.stdout and "--tr 1.33318" not in ants.stdout
    nsd = run_workflow(tmp_path / "nsd", _s3("nsd", space="func1mm"), "-n", "-p", check=False)
    assert nsd.returncode == 0, nsd.stdout[-3000:]
    assert "--nsd-coords resources/nsd/nsddata/ppdata/subj01/transforms/func1pt0-to-MNI.nii.gz" \
        in nsd.stdout
    for proc in (ants, nsd):
        assert "func1pt8" not in proc.stdout  # nothing of the 1.8 mm space is read


def test_func1mm_with_assumehrf_betas_fails_at_startup(tmp_path):
    proc = run_workflow(tmp_path, _s3(space="func1mm", beta_version="betas_assumehrf"), "-n",
                        check=False)
    assert proc.returncode != 0
    assert "nsd.space func1mm with nsd.beta_version betas_assumehrf" in proc.stdout
    assert "rule " not in proc.stdout  # no job planned


def test_check_config_refuses_what_nsd_lacks():
    base = {"nsd": {"subjects": [1], "sessions": [21], "source": "s3", "space": "func1mm",
                    "beta_version": "betas_assumehrf"},
            "rest": {"bandpass_hz": [0.01, 0.1]}}
    with pytest.raises(ConfigError, match="betas_assumehrf"):
        check_config(base)
    sim = {**base, "nsd": {**base["nsd"], "source": "simulated",
                           "beta_version": "betas_fithrf"}}
    with pytest.raises(ConfigError, match="func1pt8mm only"):
        check_config(sim)
