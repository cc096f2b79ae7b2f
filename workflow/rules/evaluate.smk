# Evaluation: the visual ROI atlas, every protocol's scores (Rest2Visual, baselines,
# ablations), the paper's tables and figures. Models come from train.smk (model_file).

ROI_ATLAS = out("templates", "dseg", "nii.gz", space="MNI152", res=RES, desc="visual")
EVALUATION = "results/evaluation/{protocol}"
TABLES = "results/tables"
FIGURES = "results/figures"
# the file names the package writes (rest2visual.evaluate.names), declared here as outputs
EVALUATION_FILES = evaluation_names.EVALUATION_FILES
TABLES_MD = {f"{t}_md": f"{TABLES}/{md}" for t, (_, md) in evaluation_names.TABLES.items()}
TABLES_CSV = {t: f"{TABLES}/{csv}" for t, (csv, _) in evaluation_names.TABLES.items()}
FIGURE_CAPTIONS = {"fig1": "fig1.rst", "fig3": "fig3.rst", "fig4": "fig4.rst", "fig5": "fig5.rst",
                   "fig6": "fig6.rst", "training": "training_curves.rst"}
FIGURE_FILES = {key: (png, FIGURE_CAPTIONS[key]) for key, png in evaluation_names.FIGURES.items()}
PAPER = {name: f"{EVALUATION.format(protocol=protocol_names.PAPER)}/{file}"
         for name, file in EVALUATION_FILES.items()}
# the atlas to resample: the config's, the simulated NSD's own, or none (Juelich through nilearn)
ROI_ATLAS_SOURCE = config["evaluate"]["roi_atlas"] or (
    f"{config['simulate']['root']}/truth/roi_atlas.nii.gz" if NSD["source"] == "simulated" else None
)


rule roi_atlas:
    input:
        mask=BRAIN_MASK,
        # the simulated atlas appears with the simulated NSD (its params.json is written last)
        truth=[f"{config['simulate']['root']}/truth/params.json"]
        if NSD["source"] == "simulated" and not config["evaluate"]["roi_atlas"] else [],
        # the configured atlas file: editing it remakes the resampled atlas
        source=[config["evaluate"]["roi_atlas"]] if config["evaluate"]["roi_atlas"] else [],
    output:
        ROI_ATLAS,
    params:
        atlas=["--atlas", ROI_ATLAS_SOURCE] if ROI_ATLAS_SOURCE else [],
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        log("evaluate", "roi_atlas"),
    benchmark:
        bench("evaluate", "roi_atlas")
    conda:
        "../../envs/model.yaml"
    shell:
        "rest2visual roi-atlas --mask {input.mask:q} {params.atlas:q} --out {output:q}"
        " > {log:q} 2>&1"


rule evaluate_model:
    input:
        pack=PACK,
        split=f"{SPLITS}/{{protocol}}.csv",
        shared=f"{SPLITS}/shared.csv",
        model=model_file("{protocol}"),
        atlas=ROI_ATLAS,
    output:
        **{name: f"{EVALUATION}/{file}" for name, file in EVALUATION_FILES.items() if name != "decoding"},
        decoding=report(f"{EVALUATION}/{EVALUATION_FILES['decoding']}", caption="../report/decoding.rst",
                        category="6 Decoding probe", subcategory="{protocol}"),
    wildcard_constraints:
        protocol="|".join(re.escape(p) for p in PROTOCOLS),
    params:
        # the keys the evaluation reads (the decoder's keys rerun only decode.smk's rules)
        ev={k: config["evaluate"][k] for k in ("roi_atlas", "ridge_alphas", "ssim_window")},
        device=config["train"]["device"],
        out_dir=lambda wc, output: Path(output.scores).parent,
    resources:
        mem_mb=16000,
        runtime=240,
    log:
        log("evaluate", "evaluate_{protocol}"),
    benchmark:
        bench("evaluate", "evaluate_{protocol}")
    conda:
        "../../envs/model.yaml"
    shell:
        "rest2visual evaluate --pack {input.pack:q} --split {input.split:q} --shared {input.shared:q}"
        " --model {input.model:q} --atlas {input.atlas:q} --protocol {wildcards.protocol:q}"
        " --ridge-alphas {params.ev[ridge_alphas]:q} --ssim-window {params.ev[ssim_window]:q}"
        " --device {params.device:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule tables:
    input:
        [f"{EVALUATION.format(protocol=p)}/{EVALUATION_FILES['scores']}" for p in PROTOCOLS],
    output:
        **{t: report(f, caption=f"../report/{t}.rst", category="4 Tables") for t, f in TABLES_CSV.items()},
        **TABLES_MD,
    params:
        out_dir=lambda wc, output: Path(output.table1).parent,
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        log("evaluate", "tables"),
    benchmark:
        bench("evaluate", "tables")
    conda:
        "../../envs/model.yaml"
    shell:
        "rest2visual evaluate tables --scores {input:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule figures:
    input:
        pack=PACK,
        evaluation=[PAPER[n] for n in ("scores", "predictions", "snr_cnr", "intersubject")],
        atlas=ROI_ATLAS,
        template=TEMPLATE,
        train_log=f"{Path(model_file(protocol_names.PAPER)).parent}/train_log.csv",
    output:
        **{
            key: report(f"{FIGURES}/{png}", caption=f"../report/{rst}", category="5 Evaluation")
            for key, (png, rst) in FIGURE_FILES.items()
        },
    params:
        evaluation_dir=lambda wc, input: Path(input.evaluation[0]).parent,
        out_dir=lambda wc, output: Path(output.fig1).parent,
    resources:
        mem_mb=4000,
        runtime=20,
    log:
        log("evaluate", "figures"),
    benchmark:
        bench("evaluate", "figures")
    conda:
        "../../envs/model.yaml"
    shell:
        "rest2visual figures --pack {input.pack:q} --evaluation-dir {params.evaluation_dir:q}"
        " --atlas {input.atlas:q} --template {input.template:q} --train-log {input.train_log:q}"
        " --out-dir {params.out_dir:q} > {log:q} 2>&1"


TARGETS.extend([*TABLES_CSV.values(), *TABLES_MD.values()])
TARGETS.extend(f"{FIGURES}/{png}" for png, _ in FIGURE_FILES.values())
