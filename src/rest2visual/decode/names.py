"""Names defined once for the decoding stage: which betas are decoded, the decoders and
the output files (``workflow/rules/decode.smk`` declares exactly these)."""

from __future__ import annotations

#: the two sources of betas a decoder reconstructs from (bridge datasets /betas_<which>)
WHICH = ("measured", "predicted")
#: evaluate.decoder values (config.schema.yaml lists the same)
DECODERS = ("ridge_identification", "mindeye2", "command")
#: decoders that reconstruct images (Table 2, the reconstruction figure)
RECONSTRUCTING = ("mindeye2", "command")
#: Table 2 files under results/tables: key → file name
TABLE2 = {"table2": "table2.csv", "table2_md": "table2.md"}
#: the reconstruction figure (the paper's Figures 2, 6b and 7) under results/figures
FIGURE = "fig7_reconstructions.png"
