# NSD inputs: the simulated NSD (demo), anonymous S3 download, or a local mirror.

NEEDED = nsdkeys.needed_keys(config)
NEEDED_BY = {k.key: k.needed_by for k in NEEDED}


if NSD["source"] == "simulated":

    rule simulate_nsd:
        output:
            [nsd_path(k.key) for k in NEEDED],
            truth=f"{config['simulate']['root']}/truth/params.json",
        params:
            root=lambda wc, output: Path(output.truth).parent.parent,
            subjects=" ".join(str(s) for s in NSD["subjects"]),
            sessions=" ".join(sorted({t for s in SUBJECTS for t in sessions(s)})),
            sim=config["simulate"],
            trials=NSD["trials_per_session"],
            tr=NSD["tr_s"],
            res=RES,
        threads: R.rule_threads(config, "simulate_nsd")
        resources:
            **R.rule_resources(config, "simulate_nsd"),
        log:
            log("nsd", "simulate_nsd"),
        benchmark:
            bench("nsd", "simulate_nsd")
        conda:
            "../../envs/preprocess.yaml"
        shell:
            "rest2visual simulate-nsd {params.root} --subjects {params.subjects}"
            " --sessions {params.sessions} --trials {params.trials}"
            " --voxel-mm {params.sim[voxel_mm]} --volumes {params.sim[volumes]}"
            " --images {params.sim[images]} --shared {params.sim[shared_images]}"
            " --mni-mm {params.res} --tr {params.tr} --seed {params.sim[seed]} > {log} 2>&1"

elif NSD["source"] == "s3":
    logger.info(
        f"NSD download plan: {len(NEEDED)} keys from s3://{NSD['bucket']}, about "
        f"{nsdkeys.estimated_bytes(NEEDED) / 1e9:,.1f} GB (estimate from NSD's 1.8 mm sizes)"
    )

    # Cluster nodes often have no internet: downloads run on the submitting host.
    localrules:
        download_nsd_key,

    rule download_nsd_key:
        output:
            f"{NSD['download_dir']}/{{key}}",
        wildcard_constraints:
            key="|".join(re.escape(k.key) for k in NEEDED),
        params:
            bucket=NSD["bucket"],
            endpoint=f"--endpoint-url {NSD['endpoint_url']}" if NSD["endpoint_url"] else "",
            needed_by=lambda wc: NEEDED_BY[wc.key],
        log:
            log("nsd", "download/{key}"),
        retries: 2
        conda:
            "../../envs/nsd.yaml"
        shell:
            "rest2visual download {wildcards.key:q} {output:q} --bucket {params.bucket}"
            " {params.endpoint} --needed-by {params.needed_by:q} > {log:q} 2>&1"

else:
    from rest2visual.nsd.mirror import check_local_mirror

    check_local_mirror(NSD["local_root"], NEEDED)
