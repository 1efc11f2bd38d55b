"""Run by torchrun from tests/test_ddp.py: train one phase under DDP, save this rank's weights.

usage: ddp_worker.py PARAMS PHASE OUT_DIR -> OUT_DIR/rank{RANK}.pt with this rank's final
weights (PhaseResult.model), the world size and the phase's history.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ofa.config import load_params
from ofa.distributed import init_distributed, set_threads
from ofa.train import train_phase


def main() -> None:
    params_path, phase, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    params = load_params(params_path)
    set_threads(params.train.threads)
    ctx = init_distributed()
    result = train_phase(params, phase, ctx, show_progress=False)
    state = {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()}
    torch.save({"rank": ctx.rank, "world": ctx.world, "model": state,
                "epochs": len(result.history)}, out / f"rank{ctx.rank}.pt")


if __name__ == "__main__":
    main()
