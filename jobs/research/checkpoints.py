"""Training checkpoints: one ``checkpoint.pt`` per run folder, replaced atomically, with the RNG states that make
a resumed run continue the same sample stream; and the record of runs chained by ``--init`` (:func:`lineage`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(out: Path, state: dict) -> None:
    """Write ``state`` to ``out/checkpoint.pt`` through a temporary name (a kill mid-write keeps the old one)."""
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save(state, tmp)
    tmp.replace(out / CHECKPOINT)


def load_checkpoint(out: str | Path) -> dict | None:
    """The state saved in ``out``, or None when the folder has no checkpoint."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state(rng: np.random.Generator, gen: torch.Generator | None = None) -> dict:
    """The numpy generator's, torch's global and (optionally) a torch generator's states."""
    state = {"numpy": json.dumps(rng.bit_generator.state), "global": torch.get_rng_state()}
    if gen is not None:
        state["torch"] = gen.get_state()
    return state


def restore_rng(state: dict, rng: np.random.Generator, gen: torch.Generator | None = None) -> None:
    rng.bit_generator.state = json.loads(state["numpy"])
    torch.set_rng_state(state["global"])
    if gen is not None:
        gen.set_state(state["torch"])


def lineage(init: dict | None) -> list[dict]:
    """The runs a model was chained from, oldest first: a run's ``init`` record and the ``init`` nested in each."""
    chain = []
    while init:
        chain.append(init)
        init = init.get("init")
    return chain[::-1]
