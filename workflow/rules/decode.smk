# Decoding bridge: each subject's test-trial betas, predicted and measured, on the native
# nsdgeneral voxels that the field's image decoders (MindEye2, NeuroPictor, Brain-IT) read.
# Evaluation predictions come from evaluate.smk (EVALUATION); the inverse transform from
# registration.smk (method ants) or NSD (method nsd).


rule native_betas:
    input:
        predictions=f"{EVALUATION}/{EVALUATION_FILES['predictions']}",
        pack=PACK,
        nsdgeneral=lambda wc: nsd_path(nsdkeys.nsdgeneral_key(int(wc.sub), SPACE)),
        **NATIVE_TRANSFORM,
    output:
        native_betas_h5("{protocol}", "{sub}"),
    wildcard_constraints:
        protocol="|".join(re.escape(p) for p in PROTOCOLS),
    params:
        transform=native_transform_args,
        space=SPACE,
    threads: 1
    # not in resources.py's measured estimates: the test rows of one subject (float16 in
    # the pack) and one composed field on the native grid; generous fixed requests
    resources:
        mem_mb=4000,
        runtime=15,
    log:
        log("decode", "native_betas_{protocol}_sub-{sub}"),
    benchmark:
        bench("decode", "native_betas_{protocol}_sub-{sub}")
    conda:
        "../../envs/preprocess.yaml"
    shell:
        "rest2visual to-native --predictions {input.predictions:q} --pack {input.pack:q}"
        " --subject {wildcards.sub:q} --nsdgeneral {input.nsdgeneral:q} --space {params.space:q}"
        " --protocol {wildcards.protocol:q} {params.transform:q} --out {output:q} > {log:q} 2>&1"


# the paper protocol's bridge files (seconds each); the simulated NSD has no MNI → func map
if config["registration"]["method"] == "ants" or NSD["source"] != "simulated":
    TARGETS.extend(native_betas_h5(protocol_names.PAPER, s) for s in SUBJECTS)
