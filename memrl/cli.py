"""`memrl`: the command-line entry point (Typer), a thin shell over the Hydra apps in memrl/apps.py.

Every command takes Hydra overrides (`key=value`) and `-m/--multirun`, which are handed to Hydra
unchanged, so `memrl eval -m data=gsm8k,math500` is a real Hydra sweep.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
import yaml

app = typer.Typer(
    name="memrl",
    help="RL fine-tuning of LLMs with memory-based rewards (MemReward, MEDS), config-driven.\n\n"
    "Each command takes Hydra overrides (key=value) and -m/--multirun for sweeps; "
    "`memrl <command> --cfg job` prints the composed config.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Let Hydra see everything after the command: overrides, -m, --cfg, --info, hydra.* keys.
HYDRA_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}

OVERRIDES_HELP = "Hydra overrides, e.g. data=gsm8k eval.limit=20 (see conf/)."

FORCE_HELP = (
    "Start over (trainer.resume=disable): what the run directory holds from another config is removed and rebuilt, "
    "with everything built from it; `memrl train` also always removes train/ and eval/. Without it, a run "
    "directory built with another config is refused, naming the differing keys (docs/run-directory.md)."
)


def _forward_to_hydra(app_name: str, overrides: list[str], multirun: bool) -> None:
    """Hand the command line to a `@hydra.main` app, as if it had been called directly."""
    os.environ["MEMRL_COMMAND"] = json.dumps(["memrl", *sys.argv[1:]])
    # Hydra reads sys.argv itself; this keeps its multirun, run directories and logging.
    sys.argv = [f"memrl-{app_name}", *(["--multirun"] if multirun else []), *overrides]
    from memrl import apps

    getattr(apps, f"{app_name}_main")()


@app.command("eval", context_settings=HYDRA_CONTEXT)
def eval_command(
    ctx: typer.Context,
    multirun: bool = typer.Option(False, "-m", "--multirun", help="Run a Hydra sweep over comma-separated values."),
) -> None:
    """Evaluate a model: greedy accuracy, pass@k and mean@n on one or more benchmarks.

    Examples: `memrl eval`, `memrl eval data=gsm8k eval.limit=20`,
    `memrl eval model.name_or_path=outputs/train/<run>`, `memrl eval -m data=synthetic,gsm8k`.
    Writes eval/results_<ts>.json, eval/samples_<bench>_<ts>.jsonl and a pass@k plot in the run directory.
    """
    _forward_to_hydra("eval", list(ctx.args), multirun)


@app.command(context_settings=HYDRA_CONTEXT)
def train(
    ctx: typer.Context,
    multirun: bool = typer.Option(False, "-m", "--multirun", help="Run a Hydra sweep over comma-separated values."),
    resume: str = typer.Option(
        None,
        "--resume",
        metavar="RUN_DIR",
        help="Continue a run from its last checkpoint, in its own directory, with the overrides it was started with "
        "(extra overrides are added after them; one that changes results is refused, except trainer.total_steps: "
        "more steps continue a finished run).",
    ),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """RL fine-tuning with GRPO / DAPO: rollouts, rewards, policy updates, validation, checkpoints.

    Examples: `memrl train` (tiny model, synthetic task, DAPO-style, a few minutes on a CPU),
    `memrl train algo=grpo`, `memrl train reward=partial reward.label_ratio=0.2`,
    `memrl train --resume outputs/train/<run>`, `memrl train -m trainer.lr=1e-4,3e-4`.
    Writes train/metrics.jsonl, train/global_step_N/ checkpoints (train/latest) and eval/ results.
    In an existing run directory (--resume, hydra.run.dir, a sweep's fixed folder) the run continues only when
    it was built with the same result-changing config; a finished run reports "nothing to do".
    """
    overrides = list(ctx.args)
    if resume:
        overrides = _existing_run_overrides(resume, "--resume", multirun) + overrides
    _forward_to_hydra("train", _forced(overrides, force), multirun)


def _forced(overrides: list[str], force: bool) -> list[str]:
    """--force: trainer.resume=disable in place of any trainer.resume (first: Hydra's options may follow)."""
    if not force:
        return overrides
    return ["trainer.resume=disable", *(o for o in overrides if not o.startswith("trainer.resume="))]


def _existing_run_overrides(run_dir: str, option: str, multirun: bool) -> list[str]:
    """`_resume_overrides` for an option that names one run directory (so it excludes -m/--multirun)."""
    if multirun:
        typer.echo(f"error: {option} works in one run directory; it cannot be combined with -m/--multirun", err=True)
        raise typer.Exit(2)
    return _resume_overrides(run_dir)


def _resume_overrides(run_dir: str) -> list[str]:
    """The overrides a run was started with, plus its directory as Hydra's run directory and resume=auto."""
    root = Path(run_dir).expanduser()
    saved = root / ".hydra" / "overrides.yaml"
    if not saved.exists():
        typer.echo(f"error: {root} is not a memrl run directory (no .hydra/overrides.yaml)", err=True)
        raise typer.Exit(2)
    previous = [
        o for o in (yaml.safe_load(saved.read_text()) or []) if not o.startswith(("hydra.run.dir=", "trainer.resume="))
    ]
    return [*previous, f"hydra.run.dir={root}", "trainer.resume=auto"]


RUN_HELP = (
    "Work in an existing run directory (its overrides are reused; finished stages built with the same config "
    "are skipped, those built with another are refused)."
)


def _warmup_command(name: str, ctx: typer.Context, multirun: bool, run: str | None, force: bool) -> None:
    """Forward a MemReward warm-up command: a new run directory under outputs/memreward/, or --run's."""
    overrides = list(ctx.args)
    if run:
        overrides = _existing_run_overrides(run, "--run", multirun) + overrides
    else:
        overrides = ["task_name=memreward", "reward=memreward", *overrides]
    _forward_to_hydra(name, _forced(overrides, force), multirun)


@app.command(context_settings=HYDRA_CONTEXT)
def rollout(
    ctx: typer.Context,
    multirun: bool = typer.Option(False, "-m", "--multirun", help="Run a Hydra sweep over comma-separated values."),
    run: str = typer.Option(None, "--run", metavar="RUN_DIR", help=RUN_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """MemReward warm-up 1/3: the initial policy's rollouts on the labelled, validation and report queries.

    Takes the train config (reward=memreward is implied). Examples: `memrl rollout`,
    `memrl rollout reward.label_ratio=0.1 reward.memreward.warmup.n=4`.
    Writes memory/queries.jsonl, memory/rollouts.jsonl (graded) and memory/done.json.
    """
    _warmup_command("rollout", ctx, multirun, run, force)


@app.command(context_settings=HYDRA_CONTEXT)
def graph(
    ctx: typer.Context,
    multirun: bool = typer.Option(False, "-m", "--multirun", help="Run a Hydra sweep over comma-separated values."),
    run: str = typer.Option(None, "--run", metavar="RUN_DIR", help=RUN_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """MemReward warm-up 2/3: MiniLM embeddings and answer features of the memory (rolls out first if needed).

    Example: `memrl graph --run outputs/memreward/<run>`. Writes graph/inputs_*.pt, graph/labels.pt and
    graph/done.json (node and edge counts of the training graph).
    """
    _warmup_command("graph", ctx, multirun, run, force)


@app.command(context_settings=HYDRA_CONTEXT)
def gnn(
    ctx: typer.Context,
    multirun: bool = typer.Option(False, "-m", "--multirun", help="Run a Hydra sweep over comma-separated values."),
    run: str = typer.Option(None, "--run", metavar="RUN_DIR", help=RUN_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """MemReward warm-up 3/3: train the reward GNN and its baselines; print their reward-prediction quality.

    Examples: `memrl gnn --run outputs/memreward/<run>`, `memrl gnn reward.memreward.gnn.restarts=5`.
    Writes gnn/gnn.pt (and mlp.pt, homogeneous.pt, no_think.pt) and gnn/report.json. Then
    `memrl train --resume outputs/memreward/<run>` trains with the GNN's rewards.
    """
    _warmup_command("gnn", ctx, multirun, run, force)


@app.command()
def report(
    sweeps: list[str] = typer.Argument(
        None, metavar="[SWEEP_DIR]...", help="Multirun folders (outputs/<task>/multiruns/<date>), pooled."
    ),
    table: list[str] = typer.Option(
        None, "--table", help="A titled table of its own: 'TITLE=DIR[,DIR...]' (repeatable; after SWEEP_DIRs)."
    ),
    out: str = typer.Option("outputs/reproduce", "--out", "-o", help="Folder for report.md, report.json, figures."),
    markdown: str = typer.Option(None, "--markdown", help="Write the markdown here instead of OUT/report.md."),
    initial: list[str] = typer.Option(
        None, "--initial", help="A `memrl eval` run of the policy before training (repeatable: one per task)."
    ),
    claims: bool = typer.Option(
        False, "--claims", help="Judge the papers' claims on the toy sweeps of `make reproduce` (docs/results.md)."
    ),
    readme: str = typer.Option(
        None, "--readme", help="Quote the claims' summary paragraph into this file, between its markers (README.md)."
    ),
    title: str = typer.Option("memrl report", "--title", help="The report's heading."),
) -> None:
    """Aggregate finished sweeps into tables (mean +- std over seeds, % of oracle) and plots.

    Examples: `memrl report outputs/toy_meds/multiruns/<date>`,
    `memrl report --table "MEDS=outputs/reproduce/meds" --table "ablations=outputs/reproduce/meds,outputs/reproduce/meds_ablations"`.
    Unfinished or failed jobs are listed, not averaged; every row comes with the command that regenerates it.
    """
    from memrl.errors import UserError
    from memrl.report.build import build_report, quote_readme_summary

    try:
        sections = []
        for spec in table or []:
            name, sep, dirs = spec.rpartition("=")
            if not sep or not name.strip() or not dirs.strip():
                raise UserError(f"--table {spec!r}: expected TITLE=DIR[,DIR...]")
            sections.append((name.strip(), [d for d in dirs.split(",") if d]))
        path = build_report(
            sweeps or [], out, title, sections=sections, markdown=markdown, initial=initial or [], claims=claims
        )
        if readme:
            quote_readme_summary(Path(readme), path)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(path.read_text())
    typer.echo(f"written: {path}")


@app.command()
def info(
    build_tiny: bool = typer.Option(False, "--build-tiny", help="Build the tiny default model now if absent."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Print versions, device, data, cache and output paths."""
    from memrl.info import collect_info, print_info

    data = collect_info(build_tiny=build_tiny)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        print_info(data)


data_app = typer.Typer(help="Datasets for the paper-scale experiments (docs/paper_scale.md).", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("prepare")
def data_prepare(
    name: str = typer.Argument(..., metavar="NAME", help="memreward | memreward_ood | meds"),
    out: str = typer.Option(
        None,
        "--out",
        "-o",
        metavar="DIR",
        help="Write DIR/NAME/ (default: the data folder's prepared/, where the configs read).",
    ),
    limit: int = typer.Option(
        None, "--limit-per-benchmark", metavar="N", help="At most N problems per benchmark (a small trial build)."
    ),
) -> None:
    """Build a paper's training mixture from hub datasets (needs the network) as JSONL with a manifest.

    Examples: `memrl data prepare memreward` (the MemReward in-domain mixture, 10 benchmarks),
    `memrl data prepare memreward_ood`, `memrl data prepare meds`. Then e.g.
    `memrl train experiment=paper/memreward_qwen2.5-3b`.
    """
    from memrl.data.registry import PREPARED_DIR, default_data_dir
    from memrl.errors import UserError
    from memrl.stages.prepare import prepare

    try:
        root = prepare(name, Path(out) if out else default_data_dir() / PREPARED_DIR, limit)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    manifest = json.loads((root / "manifest.json").read_text())
    for path, count in manifest["files"].items():
        typer.echo(f"{root / path}: {count} problems")
    typer.echo(f"written: {root / 'manifest.json'}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv)


if __name__ == "__main__":
    main()
