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
        "rest2visual template --resolution {params.res:q} --template {output.template:q}"
        " --mask {output.mask:q} > {log:q} 2>&1"


rule register_to_mni:
    input:
        anat=lambda wc: nsd_path(nsdkeys.anatomy_key(int(wc.sub), SPACE)),
        brainmask=lambda wc: nsd_path(nsdkeys.brainmask_key(int(wc.sub), SPACE)),
    output:
        composite=composite_xfm("{sub}"),
        **registration_files("{sub}"),
        anat=out("registration", "T1w", "nii.gz", sub="{sub}", space="MNI152", res=RES),
        qc=report(
            out("registration", "qc", "png", sub="{sub}", desc="registration"),
            caption="../report/registration_qc.rst",
            category="1 Registration",
            subcategory="sub-{sub}",
        ),
    params:
        reg=config["registration"],
        iterations=[str(i) for i in config["registration"]["iterations"]],
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
        "rest2visual register --anat {input.anat:q} --brainmask {input.brainmask:q}"
        " --resolution {params.res:q} --threads {params.reg[threads]:q}"
        " --out-dir {params.out_dir:q} --prefix sub-{wildcards.sub:q}"
        " --type-of-transform {params.reg[type_of_transform]:q} --metric {params.reg[metric]:q}"
        " --iterations {params.iterations:q} --seed {params.reg[seed]:q} --qc {output.qc:q}"
        " > {log:q} 2>&1"


if config["registration"]["method"] == "ants":
    TARGETS.extend(out("registration", "qc", "png", sub=s, desc="registration") for s in SUBJECTS)


rule crosscheck_registration:
    input:
        composite=composite_xfm("{sub}"),
        nsd=lambda wc: nsd_path(nsdkeys.func_to_mni_key(int(wc.sub), SPACE)),
        anat=lambda wc: nsd_path(nsdkeys.anatomy_key(int(wc.sub), SPACE)),
        brainmask=lambda wc: nsd_path(nsdkeys.brainmask_key(int(wc.sub), SPACE)),
    output:
        csv=crosscheck_csv("{sub}"),
        md=out("registration", "crosscheck", "md", sub="{sub}", desc="antsVsNsd"),
        qc=report(
            out("registration", "qc", "png", sub="{sub}", desc="crosscheck"),
            caption="../report/registration_crosscheck_qc.rst",
            category="1 Registration",
            subcategory="sub-{sub}",
        ),
    params:
        res=RES,
    threads: 1
    # not in resources.py's measured estimates: NSD's 1 mm coordinate map (87 MB) and the
    # composed field are read whole; generous fixed requests for a cluster
    resources:
        mem_mb=4000,
        runtime=15,
    log:
        log("registration", "crosscheck_sub-{sub}"),
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual crosscheck-registration --subject {wildcards.sub:q} --composite {input.composite:q}"
        " --nsd-coords {input.nsd:q} --anat {input.anat:q} --brainmask {input.brainmask:q}"
        " --resolution {params.res:q} --qc {output.qc:q} --csv {output.csv:q} --md {output.md:q}"
        " > {log:q} 2>&1"


rule crosscheck_table:
    input:
        [crosscheck_csv(s) for s in SUBJECTS],
    output:
        csv=report(
            f"results/registration/crosscheck_res-{RES}_ants-vs-nsd.csv",
            caption="../report/registration_crosscheck.rst",
            category="1 Registration",
        ),
        md=f"results/registration/crosscheck_res-{RES}_ants-vs-nsd.md",
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        log("registration", "crosscheck_table"),
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual crosscheck-registration --combine {input:q} --csv {output.csv:q}"
        " --md {output.md:q} > {log:q} 2>&1"


if config["registration"]["crosscheck"]:
    TARGETS.extend(rules.crosscheck_table.output)
