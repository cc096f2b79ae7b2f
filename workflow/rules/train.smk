# Rest2Visual training, one model per protocol (paper, unseen-stimulus, unseen-subject_sub-XX).

from rest2visual.model.rerun import RuntimeOptions, split_config as split_train_config

if FROZEN:

    rule embed_images:
        input:
            pack=PACK,
            weights=encoder_weights_input(),
        output:
            EMBEDDINGS,
        params:
            encoder=MODEL_CFG["image_encoder"],
            weights=["--weights", MODEL_CFG["encoder_weights"]] if MODEL_CFG["encoder_weights"] else [],
            dim=MODEL_CFG["embed_dim"],
        resources:
            gpu=1 if TRAIN_CFG["device"] != "cpu" else 0,
        log:
            log("models", "embed_images"),
        conda:
            "../../envs/model.yaml"
        shell:
            "rest2visual embed-images --pack {input.pack:q} --encoder {params.encoder:q} {params.weights:q}"
            " --feature-dim {params.dim:q} --out {output:q} > {log:q} 2>&1"


# device, num_workers, compile, log_every: how training runs, not what it gives
TRAIN_RESULT_CFG, TRAIN_RUNTIME = split_train_config({"model": MODEL_CFG, "train": TRAIN_CFG})


rule train_model:
    input:
        pack=PACK,
        split=f"{SPLITS}/{{protocol}}.csv",
        embeddings=EMBEDDINGS if FROZEN else [],
        weights=encoder_weights_input(),
    output:
        # derived from last.pt/best.pt (not outputs, so Snakemake never deletes them): a rerun
        # rewrites model.pt and train_log.csv from a finished training in seconds
        model=model_file("{protocol}"),
        curve=report(
            "results/models/{protocol}/train_log.csv",
            caption="../report/train_log.rst",
            category="3 Training",
        ),
    params:
        # the result-changing keys (model, train but runtime keys): an edit reruns training
        cfg=json.dumps(TRAIN_RESULT_CFG),
        # not a builtin type, so Snakemake does not compare it: edits rerun nothing
        runtime=RuntimeOptions(TRAIN_RUNTIME),
        launcher=train_launcher,
        embeddings=lambda wc, input: ["--embeddings", input.embeddings] if input.embeddings else [],
        out_dir=lambda wc, output: Path(output.model).parent,
    threads: R.rule_threads(config, "train_model")
    resources:
        **R.rule_resources(config, "train_model"),
    log:
        log("models", "train_{protocol}"),
    benchmark:
        bench("models", "train_{protocol}")
    conda:
        "../../envs/model.yaml"
    shell:
        "{params.launcher} train --pack {input.pack:q} --split {input.split:q} --params {params.cfg:q}"
        " --runtime {params.runtime:q} {params.embeddings:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


TARGETS.append(model_file(protocol_names.PAPER))
