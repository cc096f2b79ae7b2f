# Rest2Visual training, one model per protocol (paper, unseen-stimulus, unseen-subject_sub-XX).

if FROZEN:

    rule embed_images:
        input:
            PACK,
        output:
            EMBEDDINGS,
        params:
            encoder=MODEL_CFG["image_encoder"],
            weights=f"--weights {MODEL_CFG['encoder_weights']}" if MODEL_CFG["encoder_weights"] else "",
            dim=MODEL_CFG["embed_dim"],
        resources:
            gpu=1 if TRAIN_CFG["device"] != "cpu" else 0,
        log:
            log("models", "embed_images"),
        conda:
            "../../envs/model.yaml"
        shell:
            "rest2visual embed-images --pack {input} --encoder {params.encoder} {params.weights}"
            " --feature-dim {params.dim} --out {output} > {log} 2>&1"


rule train_model:
    input:
        pack=PACK,
        split=f"{SPLITS}/{{protocol}}.csv",
        embeddings=EMBEDDINGS if FROZEN else [],
    output:
        # the trained weights are precious: protected against accidental reruns
        model=protected(model_file("{protocol}")),
        curve=report(
            "results/models/{protocol}/train_log.csv",
            caption="../report/train_log.rst",
            category="4 Training",
        ),
    params:
        cfg=json.dumps({"model": MODEL_CFG, "train": TRAIN_CFG}),
        launcher=train_launcher,
        embeddings=lambda wc, input: f"--embeddings {input.embeddings}" if input.embeddings else "",
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
        "{params.launcher} train --pack {input.pack} --split {input.split} --params {params.cfg:q}"
        " {params.embeddings} --out-dir {params.out_dir} > {log} 2>&1"


TARGETS.append(model_file("paper"))
