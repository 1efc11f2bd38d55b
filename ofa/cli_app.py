"""The typer app and its global options, shared by the command modules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Once-for-All: train one elastic supernet, specialize it per device.")


@dataclass(frozen=True)
class Options:
    params: Path
    preset: Optional[str]


@app.callback()
def _root(ctx: typer.Context,
          params: Path = typer.Option(Path("params.yaml"), help="params file"),
          preset: Optional[str] = typer.Option(None, help="overlay a shipped preset, e.g. smoke")) -> None:
    ctx.obj = Options(params, preset)


def load(ctx: typer.Context, device: str | None = None, phase: str | None = None,
         configs: Sequence[str] = ()):
    """The params of this invocation (params file plus preset), with torch threads applied.

    The device, phase and subnet configs named on the command line are checked here, before
    torch is imported, so a misspelled one is refused in a fraction of a second rather than
    after seconds of imports."""
    from ofa.config import load_params

    p = load_params(ctx.obj.params, ctx.obj.preset)
    if device is not None:
        p.device(device)
    if phase is not None:
        p.phase(phase)
    if configs:
        from ofa.space import SearchSpace, SubnetConfig

        space = SearchSpace(p.space)
        for text in configs:
            space.validate(SubnetConfig.parse(text))
    from ofa.distributed import set_threads

    set_threads(p.train.threads)
    return p
