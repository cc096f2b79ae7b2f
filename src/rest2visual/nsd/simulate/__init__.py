"""A simulated Natural Scenes Dataset: NSD's keys, formats and quirks, with known ground truth.

``simulate_nsd(root, ...)`` writes ``root/nsd/<NSD keys>`` (what the pipeline reads,
as if downloaded) and ``root/truth/`` (what tests measure recovery against). Modules:

- ``anatomy``: native grids, each subject's true native → MNI mapping, T1 and masks;
- ``networks``: resting-state networks, their time courses and the native rest runs;
- ``stimuli``: procedural ``imgBrick`` images and their response-driving features;
- ``responses``: the V1–V5 atlas, subject gain topography and evoked trial betas
  (and how the rest scan reveals the gain);
- ``design``: ``nsd_expdesign.mat`` and ``nsd_stim_info_merged.csv``;
- ``fields``: MNI fields on the truth lattice and named random streams;
- ``writer``: writes it all atomically; ``truth``: reads the ground truth back;
- ``cli``: ``rest2visual simulate-nsd``.
"""

from rest2visual.nsd.simulate.writer import SimulatedNSD, simulate_nsd

__all__ = ["SimulatedNSD", "simulate_nsd"]
