"""Names defined once for the evaluation, its figures and the workflow rules: the methods
(HDF5 key → display name) and the output files of each stage.

``workflow/rules/evaluate.smk`` declares exactly these files as outputs, and
:mod:`rest2visual.evaluate.writers` and :mod:`rest2visual.figures.make` write them.
"""

from __future__ import annotations

#: method key (HDF5 name in predictions.h5) → display name, in the paper's table order
METHODS = {"random": "Random", "resting": "Resting", "group_mean": "Group mean",
           "ridge": "Ridge encoding", "noise_image": "noise image", "noise_rest": "noise rest",
           "rest2visual": "Rest2Visual"}
#: the model under test (display name)
MODEL = METHODS["rest2visual"]
#: the measured betas, beside the methods in SNR/CNR and decoding tables
MEASURED = "Measured"
#: the full model and its two noise ablations (Fig. 6), key → display name
ABLATIONS = {key: METHODS[key] for key in ("rest2visual", "noise_rest", "noise_image")}

#: tables written per protocol and into results/tables: name → (CSV, Markdown) files
PROTOCOL_TABLES = {t: (f"{t}.csv", f"{t}.md") for t in ("table1", "table3", "comparisons")}
#: results/tables: the paper protocol's tables and Table 4 (every protocol)
TABLES = {**PROTOCOL_TABLES, "table4": ("table4.csv", "table4.md")}
#: ``rest2visual evaluate --out-dir``: output key → file name (every file it writes)
EVALUATION_FILES = {
    "scores": "scores.csv", "predictions": "predictions.h5", "snr_cnr": "snr_cnr.csv",
    "intersubject": "intersubject.csv", "decoding": "decoding.csv",
    "noise_ceiling": "noise_ceiling.csv",
    **{k: v for t, (csv, md) in PROTOCOL_TABLES.items() for k, v in ((t, csv), (f"{t}_md", md))},
    "meta": "meta.json",
}
#: ``rest2visual figures --out-dir``: figure key → PNG file name
FIGURES = {
    "fig1": "fig1_predicted-vs-measured.png", "fig3": "fig3_snr-cnr.png",
    "fig4": "fig4_intersubject.png", "fig5": "fig5_roi-atlas.png",
    "fig6": "fig6_ablation-maps.png", "training": "training-curves.png",
}
