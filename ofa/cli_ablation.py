"""`ofa-cli ablation ...`: the stages of the second pipeline (`ablation/dvc.yaml`), run from
the `ablation/` folder; each reads `params.yaml` there (`ofa.ablation.AblationConfig`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ofa.cli_app import app

ablation = typer.Typer(no_args_is_help=True, help="The seeded comparison of training recipes "
                       "with subnets trained alone (ablation/dvc.yaml).")
app.add_typer(ablation, name="ablation")
CONFIG = typer.Option(Path("params.yaml"), "--config-file", help="the ablation's params file")


def _cfg(path: Path):
    from ofa.ablation import main_params
    from ofa.ablation_config import load_ablation
    from ofa.distributed import set_threads

    cfg = load_ablation(path)
    set_threads(main_params(cfg).train.threads)
    return cfg


@ablation.command()
def teacher(preset: str = typer.Option(..., help="the preset whose teacher phase to train"),
            seed: int = typer.Option(..., help="training seed"), config_file: Path = CONFIG,
            progress: bool = typer.Option(False, help="show a progress bar")) -> None:
    """Train a preset's teacher with one seed (runs/teacher-<preset>-s<seed>)."""
    from ofa.ablation import train_teacher
    from ofa.errors import OFAError

    cfg = _cfg(config_file)
    if preset not in cfg.presets:
        raise OFAError(f"preset {preset!r} is not among the ablation's presets {list(cfg.presets)}")
    typer.echo(f"wrote {train_teacher(cfg, preset, seed, progress)}")


@ablation.command()
def recipe(preset: str = typer.Option(..., help="the preset whose phases to train"),
           rule: str = typer.Option("own", help="the sampling rule (own: the preset's)"),
           seed: int = typer.Option(..., help="training seed"), config_file: Path = CONFIG,
           progress: bool = typer.Option(False, help="show a progress bar")) -> None:
    """Train the shrinking phases of one recipe and seed from its preset's teacher, fine-tune
    and evaluate the compared subnets (runs/<preset>.<rule>-s<seed>/eval.json)."""
    from ofa.ablation import train_recipe
    from ofa.errors import OFAError

    cfg = _cfg(config_file)
    if preset not in cfg.presets or rule not in cfg.rules:
        raise OFAError(f"recipe {preset}.{rule} is not among the ablation's presets "
                       f"{list(cfg.presets)} x rules {list(cfg.rules)}")
    recipe = f"{preset}.{rule}"
    typer.echo(f"wrote {train_recipe(cfg, recipe, seed, progress)}")


@ablation.command()
def scratch(config: str = typer.Option(..., help="the subnet to train alone"),
            seed: int = typer.Option(..., help="training seed"),
            mode: str = typer.Option("scratch", help="scratch, or scratch_kd: distilled from "
                                     "the kd_teacher preset's teacher of the seed"),
            config_file: Path = CONFIG,
            progress: bool = typer.Option(False, help="show a progress bar")) -> None:
    """Train one subnet alone with one seed (runs/<mode>-<config>-s<seed>)."""
    from ofa.ablation import train_scratch

    summary = train_scratch(_cfg(config_file), config, seed, mode, progress)
    typer.echo(f"{summary['name']}: test top-1 {100 * summary['test_acc']:.2f}%; "
               f"wrote {summary['path']}")


@ablation.command()
def report(config_file: Path = CONFIG) -> None:
    """ablation.md, ablation.json and ablation.png from the runs' results."""
    from ofa.ablation_config import load_ablation
    from ofa.ablation_report import write_ablation_report

    cfg = load_ablation(config_file)
    write_ablation_report(Path(cfg.runs_dir), Path(cfg.report_dir))
    typer.echo(f"wrote {Path(cfg.report_dir) / 'ablation.md'}")
