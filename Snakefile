# rest2visual: Natural Scenes Dataset → MNI registration → PCC rest maps + evoked betas
# → HDF5 triplets → Rest2Visual training → evaluation, figures and report.
# Stage logic lives in the rest2visual package; each rule file below is thin glue.

from snakemake.utils import min_version

from rest2visual.config import ConfigError, validate_config

min_version("9.0")


# the demo config beside this Snakefile; --configfile layers a user config over it
configfile: f"{workflow.basedir}/config/config.yaml"


# the package's schema (rest2visual/config.schema.yaml): unknown keys and wrong types stop
# the run with one line naming the key; defaults are filled in from the schema
try:
    validate_config(config)
except ConfigError as exc:  # one line, no traceback of the Snakefile
    raise SystemExit(f"rest2visual: error: {exc}") from None


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/nsd.smk"
include: "workflow/rules/registration.smk"
include: "workflow/rules/rest.smk"
include: "workflow/rules/evoked.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/decode.smk"


rule all:
    default_target: True
    input:
        TARGETS,
