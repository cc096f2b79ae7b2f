# Trial betas of each session: int16/300 → % signal change, to MNI, × MNI brain mask.


rule evoked_betas:
    input:
        betas=lambda wc: nsd_path(nsdkeys.betas_key(int(wc.sub), int(wc.ses), SPACE, BETAS)),
        transform=lambda wc: mni_transform(wc.sub),
        mask=BRAIN_MASK,
    output:
        evoked_betas_h5("{sub}", "{ses}"),
    params:
        trials=NSD["trials_per_session"],
    threads: R.rule_threads(config, "evoked_betas")
    resources:
        **R.rule_resources(config, "evoked_betas"),
    log:
        log("evoked", "sub-{sub}_ses-{ses}"),
    benchmark:
        bench("evoked", "sub-{sub}_ses-{ses}")
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual evoked --betas {input.betas:q} --transform {input.transform:q}"
        " --mask {input.mask:q} --subject {wildcards.sub:q} --session {wildcards.ses:q}"
        " --trials {params.trials:q} --out {output:q} > {log:q} 2>&1"


rule ncsnr_to_mni:
    input:
        ncsnr=lambda wc: nsd_path(nsdkeys.ncsnr_key(int(wc.sub), SPACE, BETAS)),
        transform=lambda wc: mni_transform(wc.sub),
        mask=BRAIN_MASK,
    params:
        transform=transform_args,
    output:
        out("evoked", "ncsnr", "nii.gz", sub="{sub}", space="MNI152", res=RES),
    threads: R.rule_threads(config, "ncsnr_to_mni")
    resources:
        **R.rule_resources(config, "ncsnr_to_mni"),
    log:
        log("evoked", "sub-{sub}_ncsnr"),
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual warp-to-mni --in {input.ncsnr:q} {params.transform:q}"
        " --mask {input.mask:q} --missing-as-nan --out {output:q} > {log:q} 2>&1"


TARGETS.extend(evoked_betas_h5(s, t) for s, t in subject_sessions())
