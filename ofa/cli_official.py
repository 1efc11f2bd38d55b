"""`ofa-cli` commands for the paper authors' pretrained supernets: import-official turns their
file into this project's checkpoint, export-official writes one of ours in their format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ofa import paths
from ofa.cli_app import app
from ofa.errors import OFAError


@app.command("import-official")
def import_official(ctx: typer.Context,
                    checkpoint: Path = typer.Argument(..., help="the authors' file, e.g. "
                                                      "ofa_mbv3_d234_e346_k357_w1.0"),
                    output: Path = typer.Option(..., help="this project's checkpoint to write"),
                    preset: Optional[str] = typer.Option(None, help="the space to import into: "
                                                         "imagenet (w1.0) or imagenet_w12 (w1.2); "
                                                         "default: the global --preset")) -> None:
    """Import the paper authors' pretrained OFA MobileNetV3 supernet as a checkpoint.

    Their file (a state dict, bare or as {"state_dict": ...}; old key spellings too) becomes a
    supernet checkpoint of this project in the preset's space, for every later step."""
    if preset is not None and ctx.obj.preset is not None and preset != ctx.obj.preset:
        raise OFAError(f"two presets given: --preset {ctx.obj.preset} before the command and "
                       f"--preset {preset} after it")
    chosen = preset if preset is not None else ctx.obj.preset
    from ofa.config import load_params
    from ofa.official import import_official as run

    params = load_params(ctx.obj.params, chosen)
    meta = run(checkpoint, params.space, output, chosen)
    info = meta["imported"]
    record = paths.import_record(output)
    typer.echo(f"wrote {output} and its record {record}: the authors' OFAMobileNetV3 width_mult "
               f"{info['width_mult']} (sha256 {info['sha256'][:16]}, {info['renamed_keys']} keys "
               f"renamed); to specialize it, set params.yaml supernet.checkpoint: {output} and "
               f"supernet.record: {record}")


@app.command("export-official")
def export_official(checkpoint: Path = typer.Argument(..., help="a supernet checkpoint of this "
                                                      "project (space.feature_bias off)"),
                    output: Path = typer.Option(..., help="the authors' file to write")) -> None:
    """Write a supernet checkpoint in the paper authors' format.

    {"state_dict": ...} under their key names, which their OFAMobileNetV3(width_mult=...)
    .load_state_dict accepts; the same tensors always give the same bytes."""
    from ofa.official import export_official as run

    res = run(checkpoint, output)
    typer.echo(f"wrote {output}: {res['tensors']} tensors of the authors' OFAMobileNetV3 "
               f"width_mult {res['width_mult']} (sha256 {res['sha256'][:16]})")
