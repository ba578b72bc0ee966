r"""Submit spidr_jax jobs to SLURM, one per config, after checking every config here.

    python -m spidr_jax.launch -A ACCOUNT -N NODES -G GPUS_PER_NODE [-t MINUTES] CONFIG [CONFIG ...] \\
        [--config.SECTION.FIELD=VALUE ...]
    python -m spidr_jax.launch extract -N NODES -G GPUS_PER_NODE --checkpoint DIR --manifest FILE --output DIR --layer N

Prints one line per job: the job id, the config and the log. Run with --help for every option.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from spidr_jax.config.loading import config_to_json
from spidr_jax.config.run import Config
from spidr_jax.errors import UsageError, exit_on_user_error
from spidr_jax.launch.dump import JobFolder, folder_name, job_folder, sbatch_script, write_job_files
from spidr_jax.launch.options import LaunchOptions, build_parser, parse_options
from spidr_jax.launch.resources import sbatch_options, script_arguments, summary
from spidr_jax.launch.submit import sbatch, show
from spidr_jax.launch.validation import check_extract_args, check_train_configs


def job_name(spec: str | None) -> str:
    """`spidr_jax-<config stem>` (`spidr_jax-extract` for extractions), safe for SLURM and file names."""
    stem = "extract" if spec is None else Path(spec.split(":", 1)[-1] if ":" in spec else spec).stem
    return "spidr_jax-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)


def launch(options: LaunchOptions) -> list[tuple[str, str, Path]]:
    """Check, then submit every job (or print them with --dry-run): [(job id, config, log), ...]."""
    if options.mode == "extract":
        check_extract_args(options.extract_args)
        jobs: list[tuple[str | None, str | None]] = [(None, None)]
        configs: list[Config | None] = [None]
    else:
        resolved = check_train_configs(options.configs, options.overrides)
        jobs = [(spec, config_to_json(cfg)) for spec, cfg in zip(options.configs, resolved, strict=True)]
        configs = list(resolved)
    script = sbatch_script()
    submitted = []
    for (spec, config_json), cfg in zip(jobs, configs, strict=True):
        name = job_name(spec)
        if options.dry_run:
            print(summary(options, name, cfg))
            folder = JobFolder(options.dump.resolve() / folder_name(name))  # not created
            args = sbatch_options(options, job_name=name, log=folder.log, workdir=Path.cwd())
            show([*args, str(folder.script), *script_arguments(options, spec)], script)
            continue
        folder = job_folder(options.dump, name)
        args = sbatch_options(options, job_name=name, log=folder.log, workdir=Path.cwd())
        command = [*args, str(folder.script), *script_arguments(options, spec)]
        write_job_files(
            folder, config_json=config_json, command=["sbatch", *command], extract_args=options.extract_args
        )
        try:
            job_id = sbatch(command)
        except UsageError:
            shutil.rmtree(folder.path)  # nothing was submitted: leave no folder for it
            raise
        submitted.append((job_id, spec or "extract", folder.log_of(job_id)))
        print(f"{job_id}  {spec or 'extract'}  {folder.log_of(job_id)}", flush=True)
    return submitted


def main(argv: Sequence[str] | None = None) -> None:
    """The command line; bad input prints one `error: ...` line and exits with code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        build_parser().print_help()
        print("\nExtraction arguments: python -m spidr_jax.extract --help")
        return
    with exit_on_user_error():
        try:
            launch(parse_options(args))
        except FileNotFoundError as error:  # a file the command line names
            raise UsageError(str(error)) from None


if __name__ == "__main__":
    main()
