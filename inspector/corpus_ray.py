"""`--engine ray`: the corpus job's window batches sharded over Ray actors, one model per actor.

Choice: a pool of Ray actors (`ray.util.ActorPool`), not Ray Data `map_batches`. The work is a
reduction, not a row transform: each shard's output is one small accumulator (`CorpusState`, a few
hundred KB), and what matters is loading the model once per worker and merging shards in a fixed
order. Actors give both directly: each holds one model (one per GPU with `num_gpus=1` when the
device is CUDA), `ActorPool.map` returns results in submission order, so the merge order, and thus
the result, does not depend on which worker finished first. Ray Data would add a Dataset of token
windows, block serialisation and an aggregation step for the same effect. Ray does the scheduling and
transport; nothing here opens a socket.

With `address` the job joins an existing cluster (`ray.init(address=...)`); without, it starts a
local one with `workers` CPUs. Shards are consecutive window batches of one document, so the driver
holds one document's token ids at a time, as the local engine does.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .corpus import CorpusSettings, CorpusState, _document_windows, iter_documents

if TYPE_CHECKING:  # pragma: no cover
    from .models import LoadedModel

BATCHES_PER_SHARD = 8


def _ray():
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is in requirements.txt
        from .errors import InputError
        raise InputError("--engine ray needs the `ray` package.", "pip install 'ray>=2.40,<3'") from None
    return ray


def _init(ray, address: str | None, workers: int) -> None:
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})


class CorpusWorker:
    """Holds one model; turns shards (token ids + window batches) into accumulator arrays."""

    def __init__(self, spec: str, device: str, hist_bins: int, threads: int = 1):
        import torch

        from . import models
        torch.set_num_threads(threads)
        self.lm = models.load(spec, device=device)
        self.hist_bins = hist_bins

    def run(self, ids: np.ndarray, groups) -> dict:
        import torch

        from .corpus import process_batches
        state = CorpusState(int(self.lm.model.get_output_embeddings().weight.shape[0]))
        process_batches(self.lm, torch.as_tensor(ids), groups, state, self.hist_bins)
        return state.to_arrays()


def run_ray(spec: str, data: str | Path, settings: CorpusSettings, *, address: str | None = None,
            workers: int = 2, device: str = "auto", progress=None, lm: LoadedModel=None, actors=None) -> CorpusState:
    """The same accumulators as `corpus.run_local`, computed by `workers` Ray actors.

    `actors` (from `start_actors`) reuses actors that already hold the model; they are then left alive."""
    ray = _ray()
    from ray.util import ActorPool

    from . import models
    own = actors is None
    if own:
        actors = start_actors(spec, settings, address=address, workers=workers, device=device)
    try:
        lm = lm or models.load(spec, device="cpu")  # the driver only tokenises
        state = CorpusState(int(lm.model.get_output_embeddings().weight.shape[0]))
        pool = ActorPool(actors)
        for d, text in enumerate(iter_documents(data, settings.text_field)):
            ids, groups = _document_windows(lm, text, settings)
            if not groups:
                continue
            ids_np = ids.numpy()
            shards = [groups[i:i + BATCHES_PER_SHARD] for i in range(0, len(groups), BATCHES_PER_SHARD)]
            for arrays in pool.map(lambda a, shard: a.run.remote(ids_np, shard), shards):  # submission order
                part = CorpusState.from_arrays(arrays)
                before = state.n_tokens
                state.merge(part)
                if progress is not None:
                    progress(state, state.n_tokens - before)
            state.position = (d + 1, 0)
        return state
    finally:
        if own:
            for a in actors:
                ray.kill(a)


def start_actors(spec: str, settings: CorpusSettings, *, address: str | None = None, workers: int = 2,
                 device: str = "auto") -> list:
    """`workers` Ray actors, each loading `spec` once (joins or starts the cluster first)."""
    ray = _ray()
    _init(ray, address, workers)
    gpu = device == "cuda" or (device == "auto" and _cuda())
    actor = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(CorpusWorker)
    return [actor.remote(spec, device, settings.hist_bins) for _ in range(workers)]


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()
