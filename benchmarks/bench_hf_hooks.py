"""What the Hugging Face backend's hook points cost: HF's own forward vs the same weights wrapped.

Three timings on the same input, interleaved (A B C A B C ...) so that load changes hit all alike; the
ratios are the result, not the seconds: best-of-rounds (min / min: contention only adds time) and the
median of per-round ratios, each for wall and for this process's CPU time:

  hf      a plain ``AutoModelForCausalLM`` loaded from the same folder (no hooks anywhere)
  wrapped ``HFModel(tokens)``: every hook point attached, none in use (what analyses pay per forward)
  cached  ``run_with_cache`` of the layer points (what LogitLens / CKA ask for)

Models: a random Llama with SmolLM2-135M's shape (30 layers, d=576, vocab 49152) and a small random
Qwen4-Exp (PLE at two layers, 2 streams), both built from configs into a temporary folder.

  python benchmarks/bench_hf_hooks.py --out benchmarks/results_hf_hooks_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _time(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call. CPU time is the robust one on a shared
    machine: other processes' load stretches wall time but not the work this process does."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(name: str, folder: Path, seq: int, batch: int, rounds: int, device: str) -> dict:
    from transformers import AutoModelForCausalLM

    import engram_interp as ei

    model = ei.load(folder, device=device)
    plain = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).to(device).eval()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, model.info.vocab_size, (batch, seq), generator=g).to(device)
    points = set(model.layer_point_names())
    with torch.no_grad():
        assert torch.allclose(model(tokens), plain(tokens).logits, atol=1e-5)  # same computation
        runs = {
            "hf": lambda: plain(input_ids=tokens, use_cache=False).logits,
            "wrapped": lambda: model(tokens),
            "cached": lambda: model.run_with_cache(tokens, names_filter=lambda n: n in points),
        }
        for fn in runs.values():  # warm-up
            fn()
        wall, cpu = {k: [] for k in runs}, {k: [] for k in runs}
        for _ in range(rounds):
            for k, fn in runs.items():
                w, c = _time(fn)
                wall[k].append(w)
                cpu[k].append(c)

    def ratio(t: dict, k: str) -> float:
        return statistics.median(a / b for a, b in zip(t[k], t["hf"]))

    def best(t: dict, k: str) -> float:  # contention only ever adds time: the minimum is the cleanest
        return min(t[k]) / min(t["hf"])

    return {"model": name, "tokens": [batch, seq], "rounds": rounds,
            "median_wall_s": {k: statistics.median(v) for k, v in wall.items()},
            "median_cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
            "best_cpu_ratio": {"wrapped_over_hf": best(cpu, "wrapped"), "cached_over_hf": best(cpu, "cached")},
            "best_wall_ratio": {"wrapped_over_hf": best(wall, "wrapped"), "cached_over_hf": best(wall, "cached")},
            "cpu_ratio": {"wrapped_over_hf": ratio(cpu, "wrapped"), "cached_over_hf": ratio(cpu, "cached")},
            "wall_ratio": {"wrapped_over_hf": ratio(wall, "wrapped"), "cached_over_hf": ratio(wall, "cached")}}


def main() -> None:
    from engram_interp.backends.testing import llama_config, qwen4_exp_config, random_hf_model, save_hf_folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        smol = llama_config(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048)
        qwen = qwen4_exp_config(hidden_size=128, num_hidden_layers=4, ple_embed_dim=64, vocab_size=4096)
        for name, cfg, add_bos in (("llama-smollm2-shape", smol, True), ("qwen4-exp-small", qwen, False)):
            folder = save_hf_folder(random_hf_model(cfg, scale=0.1), Path(tmp) / name, add_bos=add_bos)
            r = bench(name, folder, args.seq, args.batch, args.rounds, args.device)
            print(json.dumps(r))
            results.append(r)
    if args.out:
        Path(args.out).write_text(json.dumps({"device": args.device, "torch": torch.__version__,
                                              "threads": torch.get_num_threads(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
