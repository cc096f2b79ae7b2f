"""Rest2Visual: predict visually evoked fMRI (NSD trial betas) from resting-state scans.

Subpackages follow the workflow's stages: ``nsd`` (keys, download, simulated NSD),
``preprocess`` (MNI template, ANTs registration, PCC rest maps, evoked betas),
``dataset`` (HDF5 triplet pack, splits, loader), ``model`` (network, training,
prediction), ``evaluate`` (metrics, baselines) and ``figures``.
"""

__version__ = "0.1.0"
