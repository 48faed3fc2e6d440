"""Specificity and collateral of a row edit away from the edited facts: unrelated suite items,
held-out text loss, the held-out positions that read an edited row (the n-grams that share the rows),
and a summary of the rows changed. Used by ``edit.evaluate``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from engram_interp.analysis.locate import within_head_rows
from engram_interp.edit.rows import EditRecord, applied

__all__ = ["unrelated_effect", "heldout_effect", "rows_summary"]


def unrelated_effect(model, items: Sequence[dict], record: EditRecord, n_boot: int, seed: int) -> dict | None:
    """Suite items the edit did not name, scored before and after (``score_items``: 1/0 per item):
    ``{n, accuracy_before, accuracy_after, change, kept}`` (kept: the fraction scored the same), each
    with a bootstrap interval over items. None without items."""
    from engram_interp.analysis.ablation import score_items
    from engram_interp.edit.evaluate import bootstrap

    if not items:
        return None
    b = score_items(model, items)
    with applied(model, record):
        a = score_items(model, items)
    return {"n": len(items), "accuracy_before": bootstrap(b.tolist(), n_boot, seed),
            "accuracy_after": bootstrap(a.tolist(), n_boot, seed),
            "change": bootstrap((a - b).tolist(), n_boot, seed), "kept": bootstrap((a == b).double().tolist(), n_boot, seed)}


def _touched(model, record: EditRecord, ids: dict[int, torch.Tensor]) -> torch.Tensor:
    """bool ``[b, pos]``: the position reads at least one edited row."""
    keys = set(record.keys)
    any_hit = None
    for l, hid in ids.items():  # [b, pos, H]
        lut = torch.zeros((hid.shape[-1], int(hid.max()) + 1), dtype=torch.bool, device=hid.device)
        for (kl, h, r) in keys:
            if kl == l and r < lut.shape[1]:
                lut[h, r] = True
        hit = lut[torch.arange(hid.shape[-1], device=hid.device), hid]  # [b, pos, H]
        any_hit = hit.any(-1) if any_hit is None else any_hit | hit.any(-1)
    return any_hit


def heldout_effect(model, texts: Sequence[str], record: EditRecord, *, max_tokens: int, per_row: int,
                   n_boot: int, seed: int) -> dict:
    """Held-out text before and after the edit. Returns ``{heldout, collateral}``: ``heldout``:
    ``{tokens, loss_before, loss_after, change}`` (mean next-token loss, nats; change with a bootstrap
    interval over windows); ``collateral``: over the positions that read an edited row (``touched``)
    and those that read none: ``{positions, logprob_change, kl, top1_changed}`` each, plus ``rows``: the
    most-read edited rows with the n-grams read through them and their mean change of log p."""
    from engram_interp.analysis.common import token_batches
    from engram_interp.analysis.memory import START
    from engram_interp.edit.evaluate import bootstrap

    if not texts:
        return {"heldout": None, "collateral": None}
    names = {f"blocks.{l}.engram.hook_hash_ids": l for l in model.engram_layers}
    window_change, loss_b, loss_a, n_tok = [], 0.0, 0.0, 0
    groups = {True: defaultdict(list), False: defaultdict(list)}
    per_key: dict[tuple, dict] = defaultdict(lambda: {"n": 0, "dlp": 0.0, "ngrams": defaultdict(int)})
    heads = {l: model.engram_heads(l) for l in model.engram_layers}
    keys = set(record.keys)
    for batch in token_batches(model, texts, batch_size=8, max_tokens=max_tokens):
        tokens = batch.tokens
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
            with applied(model, record):
                edited = model(tokens)
        ids = {l: within_head_rows(model, l, cache[n]) for n, l in names.items()}
        valid = batch.mask[:, 1:] & (tokens[:, 1:] != model.info.pad_token_id)  # predicting a real token
        nxt = tokens[:, 1:, None]
        lb, la = F.log_softmax(logits[:, :-1].double(), -1), F.log_softmax(edited[:, :-1].double(), -1)
        tb, ta = lb.gather(-1, nxt)[..., 0], la.gather(-1, nxt)[..., 0]
        kl = (lb.exp() * (lb - la)).sum(-1)
        flip = lb.argmax(-1) != la.argmax(-1)
        touched = _touched(model, record, ids)[:, :-1]
        for w in range(tokens.shape[0]):
            m = valid[w]
            if m.any():
                window_change.append(float((tb[w][m] - ta[w][m]).mean()))
        loss_b -= float(tb[valid].sum())
        loss_a -= float(ta[valid].sum())
        n_tok += int(valid.sum())
        for t in (True, False):
            sel = valid & (touched if t else ~touched)
            groups[t]["dlp"] += (ta - tb)[sel].tolist()
            groups[t]["kl"] += kl[sel].tolist()
            groups[t]["flip"] += flip[sel].double().tolist()
        raw = tokens.tolist()
        for b_i, p_i in (valid & touched).nonzero().tolist():
            for l, hid in ids.items():
                for h in range(hid.shape[-1]):
                    key = (l, h, int(hid[b_i, p_i, h]))
                    if key in keys:
                        order = heads[l].order_head(h)[0]
                        text = "".join(model.decode_token(raw[b_i][q]) if q >= 0 else START
                                       for q in range(p_i - order + 1, p_i + 1))
                        e = per_key[key]
                        e["n"] += 1
                        e["dlp"] += float(ta[b_i, p_i] - tb[b_i, p_i])
                        e["ngrams"][text] += 1
    if n_tok == 0:
        return {"heldout": None, "collateral": None}
    heldout = {"tokens": n_tok, "loss_before": loss_b / n_tok, "loss_after": loss_a / n_tok,
               "change": bootstrap(window_change, n_boot, seed)}  # loss after - before, per window
    collateral = {}
    for t, label in ((True, "touched"), (False, "untouched")):
        g = groups[t]
        collateral[label] = {"positions": len(g["dlp"]), "logprob_change": bootstrap(g["dlp"], n_boot, seed),
                             "kl": bootstrap(g["kl"], n_boot, seed), "top1_changed": bootstrap(g["flip"], n_boot, seed)}
    top = sorted(per_key.items(), key=lambda kv: -kv[1]["n"])[:20]
    collateral["rows"] = [{"layer": k[0], "order": heads[k[0]].order_head(k[1])[0], "head": heads[k[0]].order_head(k[1])[1],
                           "row": k[2], "positions": e["n"], "logprob_change": e["dlp"] / e["n"],
                           "ngrams": [{"text": s, "count": c} for s, c in sorted(e["ngrams"].items(), key=lambda x: -x[1])[:per_row]]}
                          for k, e in top]
    return {"heldout": heldout, "collateral": collateral}


def rows_summary(model, record: EditRecord) -> dict:
    """``{n_rows, by_layer_order: {"L1.n2": count}, delta_over_row_norm: {mean, max}, table_fraction}``: what the edit
    wrote (``delta_over_row_norm``: ||new - old|| / ||old|| per row; ``table_fraction``: edited rows over all rows)."""
    changes = record.changes()
    by: dict[str, int] = defaultdict(int)
    for c in changes:
        by[f"L{c['layer']}.n{model.engram_heads(c['layer']).order_head(c['head'])[0]}"] += 1
    ratio = [c["norm_delta"] / max(c["norm_old"], 1e-12) for c in changes]
    total = sum(sum(model.engram_heads(l).head_sizes) for l in model.engram_layers)
    return {"n_rows": len(changes), "by_layer_order": dict(sorted(by.items())),
            "delta_over_row_norm": {"mean": sum(ratio) / len(ratio) if ratio else None, "max": max(ratio, default=None)},
            "table_fraction": len(changes) / total, "changes": changes}
