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


# the paper protocol's bridge files (seconds each)
TARGETS.extend(native_betas_h5(protocol_names.PAPER, s) for s in SUBJECTS)


# --- image reconstruction and Table 2 (evaluate.decoder: mindeye2 or command) -----------
# The decoder reads a bridge file and reconstructs one image per test trial, from measured
# and from predicted betas; Table 2 and the figure compare both with the seen images.
# Every config value reaches the commands quoted (:q), and the decoder command itself runs
# without a shell (rest2visual.decode.command).

TABLE2 = {key: f"{TABLES}/{name}" for key, name in decode_names.TABLE2.items()}
RECON_FIGURE = f"{FIGURES}/{decode_names.FIGURE}"
# the network metrics' local weight files (rule inputs: a new file reruns Table 2)
METRIC_WEIGHTS = {k: v for k, v in config["evaluate"]["metric_weights"].items() if v}
PAPER_RECONSTRUCTIONS = [reconstructions_h5(protocol_names.PAPER, s, w)
                         for s in SUBJECTS for w in decode_names.WHICH]


rule reconstruct:
    input:
        betas=native_betas_h5("{protocol}", "{sub}"),
        decoder=decoder_inputs,
    output:
        reconstructions_h5("{protocol}", "{sub}", "{which}"),
    wildcard_constraints:
        protocol="|".join(re.escape(p) for p in PROTOCOLS),
        which="|".join(decode_names.WHICH),
    params:
        decoder=decoder_args,
    threads: 1
    # not measured: a user command's cost is unknown; MindEye2 wants one GPU (unCLIP, SDXL)
    resources:
        mem_mb=16000,
        runtime=240,
    log:
        log("decode", "reconstruct_{protocol}_sub-{sub}_{which}"),
    benchmark:
        bench("decode", "reconstruct_{protocol}_sub-{sub}_{which}")
    conda:
        "../../envs/model.yaml"
    shell:
        "rest2visual reconstruct --input {input.betas:q} --which {wildcards.which:q}"
        " {params.decoder:q} --out {output:q} > {log:q} 2>&1"


rule table2:
    input:
        reconstructions=PAPER_RECONSTRUCTIONS,
        stimuli=nsd_path(nsdkeys.STIMULI),
        weights=list(METRIC_WEIGHTS.values()),
    output:
        csv=report(TABLE2["table2"], caption="../report/table2.rst", category="4 Tables"),
        md=TABLE2["table2_md"],
    params:
        weights=[f"{k}={v}" for k, v in METRIC_WEIGHTS.items()],
        protocol=protocol_names.PAPER,
    resources:
        mem_mb=8000,
        runtime=60,
    log:
        log("decode", "table2"),
    benchmark:
        bench("decode", "table2")
    conda:
        "../../envs/model.yaml"
    shell:
        "rest2visual table2 --reconstructions {input.reconstructions:q} --stimuli {input.stimuli:q}"
        " --weights {params.weights:q} --protocol {params.protocol:q}"
        " --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule reconstruction_figure:
    input:
        reconstructions=PAPER_RECONSTRUCTIONS,
        stimuli=nsd_path(nsdkeys.STIMULI),
    output:
        report(RECON_FIGURE, caption="../report/fig7.rst", category="5 Evaluation"),
    resources:
        mem_mb=2000,
        runtime=10,
    log:
        log("decode", "reconstruction_figure"),
    benchmark:
        bench("decode", "reconstruction_figure")
    conda:
        "../../envs/model.yaml"
    shell:
        "rest2visual reconstruction-figure --reconstructions {input.reconstructions:q}"
        " --stimuli {input.stimuli:q} --out {output:q} > {log:q} 2>&1"


# Table 2 and the figure only with an image decoder: the demo keeps the ridge probe
if config["evaluate"]["decoder"] in decode_names.RECONSTRUCTING:
    TARGETS.extend([*TABLE2.values(), RECON_FIGURE])
