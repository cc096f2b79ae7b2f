# The triplet dataset: one HDF5 pack of (rest map, image, beta), and the split files.

rule pack_triplets:
    input:
        rest=[out("rest", "zmap", "nii.gz", sub=s, ses=t, space="MNI152", res=RES, desc="pcc")
              for s, t in subject_sessions()],
        # read beside each map by pack (its recipe goes into the pack and model.pt)
        recipes=[out("rest", "zmap", "json", sub=s, ses=t, space="MNI152", res=RES, desc="pcc")
                 for s, t in subject_sessions()],
        evoked=[evoked_betas_h5(s, t) for s, t in subject_sessions()],
        ncsnr=[out("evoked", "ncsnr", "nii.gz", sub=s, space="MNI152", res=RES) for s in SUBJECTS],
        expdesign=nsd_path(nsdkeys.EXPDESIGN),
        stimuli=nsd_path(nsdkeys.STIMULI),
        mask=BRAIN_MASK,
    output:
        PACK,
    params:
        image_size=config["dataset"]["image_size"],
        trials=NSD["trials_per_session"],
        config_hash=config_hash(NSD, config["mni"], config["registration"], config["rest"],
                                config["dataset"]),
    threads: R.rule_threads(config, "pack_triplets")
    resources:
        **R.rule_resources(config, "pack_triplets"),
    log:
        log("dataset", "pack_triplets"),
    benchmark:
        bench("dataset", "pack_triplets")
    conda:
        "../../envs/dataset.yaml"
    shell:
        "rest2visual pack --rest {input.rest:q} --evoked {input.evoked:q} --ncsnr {input.ncsnr:q}"
        " --expdesign {input.expdesign:q} --stimuli {input.stimuli:q} --mask {input.mask:q}"
        " --image-size {params.image_size:q} --trials-per-session {params.trials:q}"
        " --config-hash {params.config_hash:q} --out {output:q} > {log:q} 2>&1"


rule split_files:
    input:
        PACK,
    output:
        [f"{SPLITS}/{p}.csv" for p in PROTOCOLS],
        shared=f"{SPLITS}/shared.csv",
    params:
        s=config["splits"],
        unseen=["--unseen-subjects", *map(str, config["splits"]["unseen_subjects"])]
        if config["splits"]["unseen_subjects"] else [],
        out_dir=lambda wc, output: Path(output.shared).parent,
    threads: R.rule_threads(config, "split_files")
    resources:
        **R.rule_resources(config, "split_files"),
    log:
        log("dataset", "split_files"),
    conda:
        "../../envs/dataset.yaml"
    shell:
        "rest2visual splits --pack {input:q} --out-dir {params.out_dir:q} --seed {params.s[seed]:q}"
        " --n-test {params.s[n_test]:q} --val-fraction {params.s[val_fraction]:q}"
        " --n-shared-test {params.s[n_shared_test]:q}"
        " {params.unseen:q} > {log:q} 2>&1"


TARGETS.extend([PACK, f"{SPLITS}/{protocol_names.PAPER}.csv"])
