# Resting-state runs to MNI, then the PCC seed connectivity z-map of each session.


rule rest_to_mni:
    input:
        run=rest_run_key,
        transform=lambda wc: mni_transform(wc.sub),
        mask=BRAIN_MASK,
    params:
        transform=transform_args,
    output:
        # 4D MNI series are large (≈0.8 GB a run at 2 mm) and only feed the z-map
        temp(out("rest", "bold", "nii", sub="{sub}", ses="{ses}", run="{run}",
                 space="MNI152", res=RES)),
    threads: R.rule_threads(config, "rest_to_mni")
    resources:
        **R.rule_resources(config, "rest_to_mni"),
    log:
        log("rest", "sub-{sub}_ses-{ses}_run-{run}_to-MNI152"),
    benchmark:
        bench("rest", "sub-{sub}_ses-{ses}_run-{run}_to-MNI152")
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual warp-to-mni --in {input.run} {params.transform}"
        " --mask {input.mask} --out {output} > {log} 2>&1"


rule pcc_zmap:
    input:
        runs=expand(
            out("rest", "bold", "nii", sub="{{sub}}", ses="{{ses}}", run="{run}",
                space="MNI152", res=RES),
            run=[f"{r:02d}" for r in nsdkeys.REST_RUNS],
        ),
        mask=BRAIN_MASK,
        template=TEMPLATE,
        confounds=rest_confounds,
    output:
        zmap=out("rest", "zmap", "nii.gz", sub="{sub}", ses="{ses}", space="MNI152", res=RES,
                 desc="pcc"),
        qc=report(
            out("rest", "qc", "png", sub="{sub}", ses="{ses}", desc="pcc"),
            caption="../report/pcc_zmap.rst",
            category="2 Rest maps",
            subcategory="sub-{sub}",
        ),
    params:
        rest=config["rest"],
        seed=(f"--seed-mask {config['rest']['seed_mask']}" if config["rest"]["seed_mask"] else
              "--seed-center {} {} {} --seed-radius {}".format(
                  *config["rest"]["seed_center_mm"], config["rest"]["seed_radius_mm"])),
        confounds=lambda wc, input: f"--confounds {' '.join(input.confounds)}" if input.confounds else "",
        tr=NSD["tr_s"],
    threads: R.rule_threads(config, "pcc_zmap")
    resources:
        **R.rule_resources(config, "pcc_zmap"),
    log:
        log("rest", "sub-{sub}_ses-{ses}_pcc-zmap"),
    benchmark:
        bench("rest", "sub-{sub}_ses-{ses}_pcc-zmap")
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual rest-map --runs {input.runs} --mask {input.mask} {params.seed}"
        " --bandpass {params.rest[bandpass_hz][0]} {params.rest[bandpass_hz][1]}"
        " --filter-order {params.rest[filter_order]} --hrf {params.rest[hrf_model]}"
        " --combine {params.rest[combine_runs]} {params.confounds} --tr {params.tr}"
        " --template {input.template} --out {output.zmap} --qc {output.qc} > {log} 2>&1"


TARGETS.extend(
    out("rest", "zmap", "nii.gz", sub=s, ses=t, space="MNI152", res=RES, desc="pcc")
    for s, t in subject_sessions()
)
