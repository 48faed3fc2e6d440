"""Partial sums of 2 gloo processes all-reduced = the result of 1 process (CKA, LogitLens, ablation)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engram_interp.analysis import AblationAccumulator, CKAAccumulator, LogitLensAccumulator


def _data():
    g = torch.Generator().manual_seed(0)
    acts_a = torch.randn(8, 3, 40, 16, generator=g)  # [minibatch, layers, n, d]
    acts_b = acts_a[:, :2, :, :12] + 0.5 * torch.randn(8, 2, 40, 12, generator=g)
    kl = torch.rand(8, 4, 30, generator=g)
    full = (torch.rand(64, generator=g) > 0.3).double()
    abl = full * (torch.rand(64, generator=g) > 0.4).double()
    return acts_a, acts_b, kl, full, abl


def _run(rank: int, world: int, port: int, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    acts_a, acts_b, kl, full, abl = _data()
    cka = CKAAccumulator(3, 2, n_boot=50, seed=1)
    lens = LogitLensAccumulator(4)
    ab = AblationAccumulator(100, seed=2)
    for i in range(rank, 8, world):  # round-robin shards, global indices key the bootstrap weights
        cka.update(acts_a[i], acts_b[i], index=i)
        lens.update(kl[i], kl[i] * 2)
    per = 64 // world
    ab.update(full[rank * per:(rank + 1) * per], abl[rank * per:(rank + 1) * per], first_index=rank * per)
    cka.all_reduce(), lens.all_reduce(), ab.all_reduce()
    if rank == 0:
        out.put((cka.result(), cka.bootstrap(), lens.result()["kl"], ab.result()))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    _run(0, 1, _free_port(), q)
    single = q.get()
    q2 = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_run, args=(r, 2, port, q2)) for r in range(2)]
    for p in procs:
        p.start()
    double = q2.get(timeout=120)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    torch.testing.assert_close(double[0], single[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(double[1], single[1], atol=1e-12, rtol=0)
    torch.testing.assert_close(double[2], single[2], atol=1e-12, rtol=0)
    assert double[3]["retained"] == single[3]["retained"]
    assert double[3]["ci"] == single[3]["ci"]
