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
        "rest2visual warp-to-mni --in {input.run:q} {params.transform:q}"
        " --mask {input.mask:q} --out {output:q} > {log:q} 2>&1"


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
        seed_mask=seed_mask_input(),
    output:
        zmap=out("rest", "zmap", "nii.gz", sub="{sub}", ses="{ses}", space="MNI152", res=RES,
                 desc="pcc"),
        # the recipe (settings and TR used) beside the map: the pack and model.pt keep it
        recipe=out("rest", "zmap", "json", sub="{sub}", ses="{ses}", space="MNI152", res=RES,
                   desc="pcc"),
        qc=report(
            out("rest", "qc", "png", sub="{sub}", ses="{ses}", desc="pcc"),
            caption="../report/pcc_zmap.rst",
            category="2 Rest maps",
            subcategory="sub-{sub}",
        ),
    params:
        rest=config["rest"],
        seed=seed_args(),
        confounds=lambda wc, input: (["--confounds", *input.confounds] if input.confounds else []),
        tr=TR_S,
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
        "rest2visual rest-map --runs {input.runs:q} --mask {input.mask:q} {params.seed:q}"
        " --bandpass {params.rest[bandpass_hz][0]:q} {params.rest[bandpass_hz][1]:q}"
        " --filter-order {params.rest[filter_order]:q} --hrf {params.rest[hrf_model]:q}"
        " --units {params.rest[units]:q}"
        " --combine {params.rest[combine_runs]:q} {params.confounds:q} --tr {params.tr:q}"
        " --template {input.template:q} --out {output.zmap:q} --qc {output.qc:q} > {log:q} 2>&1"


# --- the rest-map quality report: the configured recipe beside the alternatives -----

# QUALITY_RECIPES, REST_RECIPE and recipe_zmap(): common.smk (no functions beside rules)


rule pcc_zmap_recipe:
    """Another recipe's z-map of a session (same runs, seed, band and combination)."""
    input:
        runs=rules.pcc_zmap.input.runs,
        mask=BRAIN_MASK,
        confounds=rest_confounds,
        seed_mask=seed_mask_input(),
    output:
        zmap=out("rest", "zmap", "nii.gz", sub="{sub}", ses="{ses}", space="MNI152", res=RES,
                 desc="pcc{Hrf}{Units}"),
        recipe=out("rest", "zmap", "json", sub="{sub}", ses="{ses}", space="MNI152", res=RES,
                   desc="pcc{Hrf}{Units}"),
    wildcard_constraints:
        Hrf="Glover|Spm|None",
        Units="Raw|Psc",
    params:
        rest=config["rest"],
        seed=seed_args(),
        confounds=lambda wc, input: (["--confounds", *input.confounds] if input.confounds else []),
        hrf=lambda wc: wc.Hrf.lower(),
        units=lambda wc: wc.Units.lower(),
        tr=TR_S,
    threads: R.rule_threads(config, "pcc_zmap")
    resources:
        **R.rule_resources(config, "pcc_zmap"),
    log:
        log("rest", "sub-{sub}_ses-{ses}_pcc{Hrf}{Units}-zmap"),
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual rest-map --runs {input.runs:q} --mask {input.mask:q} {params.seed:q}"
        " --bandpass {params.rest[bandpass_hz][0]:q} {params.rest[bandpass_hz][1]:q}"
        " --filter-order {params.rest[filter_order]:q} --hrf {params.hrf:q} --units {params.units:q}"
        " --combine {params.rest[combine_runs]:q} {params.confounds:q} --tr {params.tr:q}"
        " --out {output.zmap:q} > {log:q} 2>&1"


REST_QUALITY = {"csv": "results/rest/quality.csv", "md": "results/rest/quality.md",
                "figure": "results/rest/quality.png"}


rule rest_quality:
    input:
        maps=[recipe_zmap(s, t, r) for r in QUALITY_RECIPES for s, t in subject_sessions()],
        mask=BRAIN_MASK,
        truth=[f"{config['simulate']['root']}/truth/params.json"]
        if NSD["source"] == "simulated" else [],
    output:
        csv=report(REST_QUALITY["csv"], caption="../report/rest_quality.rst",
                   category="2 Rest maps", subcategory="quality"),
        md=REST_QUALITY["md"],
        figure=report(REST_QUALITY["figure"], caption="../report/rest_quality.rst",
                      category="2 Rest maps", subcategory="quality"),
    params:
        maps=[f"{r}:{int(s)}:{recipe_zmap(s, t, r)}"
              for r in QUALITY_RECIPES for s, t in subject_sessions()],
        truth=lambda wc, input: ["--truth", str(Path(input.truth[0]).parent)] if input.truth else [],
        configured=REST_RECIPE,
    log:
        log("rest", "quality"),
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual rest-quality --maps {params.maps:q} --mask {input.mask:q}"
        " --configured {params.configured:q} {params.truth:q}"
        " --csv {output.csv:q} --md {output.md:q} --figure {output.figure:q} > {log:q} 2>&1"


TARGETS.extend(REST_QUALITY.values())


TARGETS.extend(
    out("rest", "zmap", "nii.gz", sub=s, ses=t, space="MNI152", res=RES, desc="pcc")
    for s, t in subject_sessions()
)
