# Evaluation: the visual ROI atlas, every protocol's scores (Rest2Visual, baselines,
# ablations), the paper's tables and figures. Models come from train.smk (model_file).

ROI_ATLAS = out("templates", "dseg", "nii.gz", space="MNI152", res=RES, desc="visual")
EVALUATION = "results/evaluation/{protocol}"
TABLES = "results/tables"
FIGURES = "results/figures"
EVALUATION_FILES = {
    "scores": "scores.csv", "predictions": "predictions.h5", "snr_cnr": "snr_cnr.csv",
    "intersubject": "intersubject.csv", "decoding": "decoding.csv", "noise_ceiling": "noise_ceiling.csv",
    "table1": "table1.csv", "table1_md": "table1.md", "table3": "table3.csv", "table3_md": "table3.md",
    "meta": "meta.json",
}
TABLES_MD = {f"{t}_md": f"{TABLES}/{t}.md" for t in ("table1", "table3", "table4", "comparisons")}
TABLES_CSV = {t: f"{TABLES}/{t}.csv" for t in ("table1", "table3", "table4", "comparisons")}
FIGURE_FILES = {
    "fig1": ("fig1_predicted-vs-measured.png", "fig1.rst"),
    "fig3": ("fig3_snr-cnr.png", "fig3.rst"),
    "fig4": ("fig4_intersubject.png", "fig4.rst"),
    "fig5": ("fig5_roi-atlas.png", "fig5.rst"),
    "fig6": ("fig6_ablation-maps.png", "fig6.rst"),
    "training": ("training-curves.png", "training_curves.rst"),
}
PAPER = {name: f"{EVALUATION.format(protocol='paper')}/{file}" for name, file in EVALUATION_FILES.items()}
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
    output:
        ROI_ATLAS,
    params:
        atlas=f"--atlas {ROI_ATLAS_SOURCE}" if ROI_ATLAS_SOURCE else "",
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
        "rest2visual roi-atlas --mask {input.mask} {params.atlas} --out {output}"
        " > {log} 2>&1"


rule evaluate_model:
    input:
        pack=PACK,
        split=f"{SPLITS}/{{protocol}}.csv",
        shared=f"{SPLITS}/shared.csv",
        model=model_file("{protocol}"),
        atlas=ROI_ATLAS,
    output:
        **{name: f"{EVALUATION}/{file}" for name, file in EVALUATION_FILES.items() if name != "decoding"},
        decoding=report(f"{EVALUATION}/decoding.csv", caption="../report/decoding.rst",
                        category="6 Decoding probe", subcategory="{protocol}"),
    wildcard_constraints:
        protocol="|".join(re.escape(p) for p in PROTOCOLS),
    params:
        ev=config["evaluate"],
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
        "rest2visual evaluate --pack {input.pack} --split {input.split} --shared {input.shared}"
        " --model {input.model} --atlas {input.atlas} --protocol {wildcards.protocol}"
        " --ridge-alphas {params.ev[ridge_alphas]} --ssim-window {params.ev[ssim_window]}"
        " --device {params.device} --out-dir {params.out_dir} > {log} 2>&1"


rule tables:
    input:
        [f"{EVALUATION.format(protocol=p)}/scores.csv" for p in PROTOCOLS],
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
        "rest2visual evaluate tables --scores {input} --out-dir {params.out_dir} > {log} 2>&1"


rule figures:
    input:
        pack=PACK,
        evaluation=[PAPER[n] for n in ("scores", "predictions", "snr_cnr", "intersubject")],
        atlas=ROI_ATLAS,
        template=TEMPLATE,
        train_log=f"{Path(model_file('paper')).parent}/train_log.csv",
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
        "rest2visual figures --pack {input.pack} --evaluation-dir {params.evaluation_dir}"
        " --atlas {input.atlas} --template {input.template} --train-log {input.train_log}"
        " --out-dir {params.out_dir} > {log} 2>&1"


TARGETS.extend([*TABLES_CSV.values(), *TABLES_MD.values()])
TARGETS.extend(f"{FIGURES}/{png}" for png, _ in FIGURE_FILES.values())
