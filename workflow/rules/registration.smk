# MNI152 target grid and per-subject registration of the functional-space anatomy.

rule mni_template:
    output:
        template=TEMPLATE,
        mask=BRAIN_MASK,
    params:
        res=RES,
    threads: R.rule_threads(config, "mni_template")
    resources:
        **R.rule_resources(config, "mni_template"),
    log:
        log("templates", f"mni_template_res-{RES}"),
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual template --resolution {params.res} --template {output.template}"
        " --mask {output.mask} > {log} 2>&1"


rule register_to_mni:
    input:
        anat=lambda wc: nsd_path(nsdkeys.anatomy_key(int(wc.sub), SPACE)),
        brainmask=lambda wc: nsd_path(nsdkeys.brainmask_key(int(wc.sub), SPACE)),
    output:
        composite=composite_xfm("{sub}"),
        sidecar=out("registration", "xfm", "json", sub="{sub}", desc="composite", **XFM_ENTITIES),
        affine=out("registration", "xfm", "mat", sub="{sub}", desc="affine", **XFM_ENTITIES),
        warp=out("registration", "xfm", "nii.gz", sub="{sub}", desc="warp", **XFM_ENTITIES),
        inverse_warp=out("registration", "xfm", "nii.gz", sub="{sub}", desc="warp",
                         **{"from": "MNI152", "to": "func", "res": RES}),
        anat=out("registration", "T1w", "nii.gz", sub="{sub}", space="MNI152", res=RES),
        qc=report(
            out("registration", "qc", "png", sub="{sub}", desc="registration"),
            caption="../report/registration_qc.rst",
            category="1 Registration",
            subcategory="sub-{sub}",
        ),
    params:
        reg=config["registration"],
        iterations=" ".join(str(i) for i in config["registration"]["iterations"]),
        res=RES,
        out_dir=lambda wc, output: Path(output.composite).parent,
    threads: R.rule_threads(config, "register_to_mni")
    resources:
        **R.rule_resources(config, "register_to_mni"),
    log:
        log("registration", "sub-{sub}"),
    benchmark:
        bench("registration", "sub-{sub}")
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual register --anat {input.anat} --brainmask {input.brainmask}"
        " --resolution {params.res} --threads {threads}"
        " --out-dir {params.out_dir} --prefix sub-{wildcards.sub}"
        " --type-of-transform {params.reg[type_of_transform]} --metric {params.reg[metric]}"
        " --iterations {params.iterations} --seed {params.reg[seed]} --qc {output.qc} > {log} 2>&1"


if config["registration"]["method"] == "ants":
    TARGETS.extend(out("registration", "qc", "png", sub=s, desc="registration") for s in SUBJECTS)
