"""Vocabulary geometry at GPT-2 scale: neighbours of 1 000 tokens and k-means over a 50 257 × 768 table.

Matrix: float32, N(0, 1) entries from a seeded generator (GPT-2-small's token-embedding shape).
- neighbours  `analyses.embeddings.neighbours_of_matrix(E, 1 000 seeded query ids, k=10, block=4096)`:
              cosine top-k over row blocks, no V × V (or Q × V) matrix beyond one block.
- dense       the one-shot way, for the ratio: normalise a copy of E, Q @ Eᵀ (1 000 × 50 257), topk.
              Must return the same ids (checked).
- clusters    `analyses.embeddings.cluster_matrix(E, n_clusters=50, seed=0)` (MiniBatchKMeans above
              20 000 rows, silhouette on a 3 000-row sample).

Each runs once in a fresh subprocess: wall time, peak RSS growth over the process that already
holds E (see bench/_util.py), and the whole process's peak RSS. Targets: < 90 s and < 2 GB each.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util  # noqa: E402

V, D = 50_257, 768
N_QUERIES, K, N_CLUSTERS = 1_000, 10, 50
TARGET_S, TARGET_MB = 90.0, 2048.0
TASKS = ("neighbours", "dense", "clusters")


def matrix(rows: int) -> torch.Tensor:
    return torch.randn(rows, D, generator=torch.Generator().manual_seed(0), dtype=torch.float32)


def queries(rows: int, n: int) -> np.ndarray:
    return np.random.default_rng(1).choice(rows, size=min(n, rows), replace=False).astype(np.int64)


def dense_neighbours(E: torch.Tensor, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    En = E / torch.linalg.vector_norm(E, dim=1, keepdim=True)
    qt = torch.as_tensor(q)
    sims = En[qt] @ En.T  # (Q, V)
    sims[torch.arange(len(q)), qt] = -float("inf")  # the query itself is no neighbour
    top = torch.topk(sims, k, dim=1)
    return top.indices.numpy(), top.values.numpy()


def worker(task: str, rows: int, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    from inspector.analyses.embeddings import cluster_matrix, neighbours_of_matrix

    E = matrix(rows)
    q = queries(rows, N_QUERIES)
    info = {}
    with _util.PeakMemory(torch.device("cpu")) as mem:
        t0 = time.perf_counter()
        if task == "neighbours":
            ids, sims = neighbours_of_matrix(E, q, K, block=4096)
        elif task == "dense":
            ids, sims = dense_neighbours(E, q, K)
        else:
            res = cluster_matrix(E, N_CLUSTERS, seed=0)
            info.update(algorithm=res.algorithm, inertia=res.inertia, silhouette=res.silhouette,
                        smallest=int(res.sizes.min()), largest=int(res.sizes.max()))
        seconds = time.perf_counter() - t0
    if task != "clusters":
        info.update(ids=ids.tolist(), sims=np.asarray(sims, dtype=np.float64).tolist())
    status = _util._status_kb()
    _util.emit({"seconds": seconds, "peak_mb": mem.peak_mb, "method": mem.method,
                "process_peak_mb": status["VmHWM"] / 1024, **info})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 000 rows instead of 50 257")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--worker", nargs=2, metavar=("TASK", "ROWS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.threads)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = 10_000 if args.quick else V
    print(_util.header("Vocabulary geometry (bench/bench_vocab.py)", torch.device("cpu"),
                       f"E {rows:,} × {D} float32 (seeded N(0,1)) · {N_QUERIES:,} queries, k={K} · "
                       f"{N_CLUSTERS} clusters · one run per task, fresh process each · "
                       f"load average {_util.load_average()}"), flush=True)
    extra = ["--threads", str(args.threads)] if args.threads else []
    res = {t: _util.run_worker(Path(__file__), [t, str(rows), *extra]) for t in TASKS}
    rows_out = []
    for t in TASKS:
        r = res[t]
        ok = r["seconds"] < TARGET_S and r["process_peak_mb"] < TARGET_MB
        rows_out.append([t, r["seconds"], r["peak_mb"], r["process_peak_mb"], "yes" if ok else "NO"])
    print(f"\nMemory: {res['neighbours']['method']}; E itself is {rows * D * 4 / 2**20:.0f} MiB\n")
    print(_util.table(["task", "seconds", "peak growth MiB", "process peak MiB",
                       f"< {TARGET_S:.0f} s and < {TARGET_MB / 1024:.0f} GiB"], rows_out))
    n, d = res["neighbours"], res["dense"]
    ids_n, ids_d = np.array(n["ids"]), np.array(d["ids"])
    sim_diff = float(np.abs(np.array(n["sims"]) - np.array(d["sims"])).max())
    same = float((ids_n == ids_d).mean())
    print(f"\nneighbours vs dense: time ×{n['seconds'] / d['seconds']:.2f}, peak growth ×"
          f"{n['peak_mb'] / max(d['peak_mb'], 1e-9):.2f}; same id at the same rank {same:.2%}, "
          f"cosine at each rank max|Δ| {sim_diff:.1e} (differing ids are near-ties)")
    c = res["clusters"]
    print(f"clusters: {c['algorithm']}, sizes {c['smallest']}–{c['largest']}, inertia {c['inertia']:.1f}, "
          f"silhouette {c['silhouette']:.4f}")
    assert sim_diff < 1e-5, "blocked neighbours differ from the dense computation"


if __name__ == "__main__":
    main()
