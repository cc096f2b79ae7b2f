# NSD inputs: the simulated NSD (demo), anonymous S3 download, or a local mirror.

from rest2visual.nsd.check import workflow_keys

NEEDED = workflow_keys(config)
NEEDED_BY = {k.key: k.needed_by for k in NEEDED}
logger.info(
    f"NSD space {SPACE}: rest runs whose header has no time unit (NSD's: xyzt_units = 0) "
    f"use TR {TR_S:g} s from config {TR_KEY}"
)


if NSD["source"] == "simulated":

    rule simulate_nsd:
        output:
            [nsd_path(k.key) for k in NEEDED],
            truth=f"{config['simulate']['root']}/truth/params.json",
        params:
            root=lambda wc, output: Path(output.truth).parent.parent,
            subjects=[str(s) for s in NSD["subjects"]],
            sessions=sorted({t for s in SUBJECTS for t in sessions(s)}),
            sim=config["simulate"],
            trials=NSD["trials_per_session"],
            tr=TR_S,
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
            "rest2visual simulate-nsd {params.root:q} --subjects {params.subjects:q}"
            " --sessions {params.sessions:q} --trials {params.trials:q}"
            " --voxel-mm {params.sim[voxel_mm]:q} --volumes {params.sim[volumes]:q}"
            " --images {params.sim[images]:q} --shared {params.sim[shared_images]:q}"
            " --mni-mm {params.res:q} --tr {params.tr:q} --dmn-coupling {params.sim[dmn_coupling]:q}"
            " --seed {params.sim[seed]:q} > {log:q} 2>&1"

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
            endpoint=["--endpoint-url", NSD["endpoint_url"]] if NSD["endpoint_url"] else [],
            needed_by=lambda wc: NEEDED_BY[wc.key],
        log:
            log("nsd", "download/{key}"),
        retries: 2
        conda:
            "../../envs/nsd.yaml"
        shell:
            "rest2visual download {wildcards.key:q} {output:q} --bucket {params.bucket:q}"
            " {params.endpoint:q} --needed-by {params.needed_by:q} > {log:q} 2>&1"

elif workflow.is_main_process:
    # A local mirror is read in place: every needed key is checked now (headers and
    # gzip trailers, seconds), so the jobs are planned only on a mirror that passes.
    # Cluster jobs re-read this file and skip it (not the main process).
    from rest2visual.nsd.check import preflight

    preflight(config, log=logger.info)


onstart:
    # S3: check the bucket's keys (HEAD and ranged GETs) once the jobs are planned and
    # before the first starts; not in dry-runs or cluster jobs (they run --no-hooks).
    if NSD["source"] == "s3":
        from rest2visual.nsd.check import preflight

        preflight(config, log=logger.info)
