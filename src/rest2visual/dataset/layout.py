"""Names and dtypes of a triplet pack's datasets and attributes (see :mod:`.pack`).

Shared by the writer (:mod:`.pack`), the checker (:mod:`.validate`) and the
split files (:mod:`.splits`), which import this module and not each other.
"""

from __future__ import annotations

import numpy as np

#: one 1D dataset under /trials per column, with its stored dtype
TRIAL_DTYPES = {
    "subject": np.int32, "session": np.int32, "trial": np.int32, "nsd_id": np.int32,
    "shared": np.bool_, "repeat": np.int8, "image_row": np.int32, "rest_row": np.int32,
}
TRIAL_COLUMNS = tuple(TRIAL_DTYPES)
#: the columns that identify a trial (split files carry these)
TRIAL_KEY = ("subject", "session", "trial")
#: root attributes every pack carries
REQUIRED_ATTRS = (
    "config_hash", "rest2visual_version", "template", "mask_description", "resolution_mm",
    "created_utc", "n_trials", "n_voxels", "image_size", "n_excluded_trials",
)
