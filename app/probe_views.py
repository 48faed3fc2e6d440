"""Routing and attention views of one text for the Probe page, read from the public hooks only
(``blocks.{l}.mlp.hook_expert_ids|hook_expert_weights|hook_router_scores`` at MoE layers,
``blocks.{l}.attn.hook_pattern``): per-token top-k experts with their gate weights, and the attention
pattern of every head. The page calls :func:`render` once per model."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
import torch

from app import state


@torch.no_grad()
def routing(model, tokens: torch.Tensor) -> dict[int, dict[str, torch.Tensor]]:
    """``{moe layer: {"ids": [pos, top_k] int64, "weights": [pos, top_k], "n_experts": int}}`` for one
    text ``tokens`` ``[1, pos]``; empty for a model without MoE layers or whose backend has no routing
    hooks (the Hugging Face backend, docs/MODELS.md)."""
    layers = [l for l in model.info.moe_layers if f"blocks.{l}.mlp.hook_expert_ids" in model.hook_dict]
    names = {f"blocks.{l}.mlp.{h}" for l in layers for h in ("hook_expert_ids", "hook_expert_weights", "hook_router_scores")}
    if not names:
        return {}
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return {l: {"ids": cache[f"blocks.{l}.mlp.hook_expert_ids"][0].cpu(),
                "weights": cache[f"blocks.{l}.mlp.hook_expert_weights"][0].float().cpu(),
                "n_experts": int(cache[f"blocks.{l}.mlp.hook_router_scores"].shape[-1])} for l in layers}


@torch.no_grad()
def attention(model, tokens: torch.Tensor) -> torch.Tensor | None:
    """Attention patterns ``[layer, head, query_pos, key_pos]`` (float32, rows sum to 1) of one text;
    None when the backend has no pattern hooks (the Hugging Face backend, docs/MODELS.md)."""
    names = {f"blocks.{l}.attn.hook_pattern" for l in range(model.info.n_layers)}
    if not names <= set(model.hook_dict):
        return None
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][0].float().cpu() for l in range(model.info.n_layers)])


@st.cache_data(max_entries=32, show_spinner="Reading routing and attention ...")
def _views(path: str, sha: str, text: str) -> tuple[list[str], dict, torch.Tensor]:
    model = state.model_for(path, sha)
    tokens = model.to_tokens(text)
    return model.to_str_tokens(tokens[0]), routing(model, tokens), attention(model, tokens)


def routing_figure(str_tokens: list[str], layer_routing: dict[str, torch.Tensor], layer: int) -> go.Figure:
    """Token x expert heatmap of the gate weight g_i (0 where the expert was not chosen)."""
    n = layer_routing["n_experts"]
    z = torch.zeros(len(str_tokens), n)
    z.scatter_(1, layer_routing["ids"].long(), layer_routing["weights"])
    fig = go.Figure(go.Heatmap(z=z.tolist(), x=[f"e{e}" for e in range(n)], y=[f"{i}: {t!r}" for i, t in enumerate(str_tokens)],
                               colorscale="Viridis", colorbar=dict(title="g_i"),
                               hovertemplate="%{y} -> %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"routed experts at MoE layer {layer}", yaxis=dict(autorange="reversed"),
                      height=140 + 22 * len(str_tokens), margin=dict(l=10, r=10, t=50, b=40))
    return fig


def attention_figure(str_tokens: list[str], pattern: torch.Tensor, layer: int, head: int) -> go.Figure:
    """Query x key heatmap of one head's attention (rows sum to 1)."""
    labels = [f"{i}: {t!r}" for i, t in enumerate(str_tokens)]
    fig = go.Figure(go.Heatmap(z=pattern.tolist(), x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1,
                               hovertemplate="query %{y} -> key %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(title=f"attention, layer {layer} head {head}", yaxis=dict(autorange="reversed", title="query"),
                      xaxis_title="key", height=160 + 22 * len(str_tokens), margin=dict(l=10, r=10, t=50, b=40))
    return fig


def render(entry, text: str) -> None:
    """Expanders with the routing and attention views of ``text`` for the model of ``entry``."""
    toks, route, patterns = _views(str(entry.path), entry.sha, text)
    key = f"probe-views-{entry.label}"
    with st.expander(f"Routing (MoE top-k experts) · {entry.label}"):
        if not route:
            st.info(f"**{entry.label}** has no MoE layers with routing hooks.")
        else:
            layer = st.selectbox("MoE layer", sorted(route), key=f"{key}-moe")
            st.plotly_chart(routing_figure(toks, route[layer], layer), width="stretch", key=f"{key}-route-fig")
            st.caption("Each row is a token; a cell is the renormalised gate weight g_i of a chosen expert.")
    with st.expander(f"Attention patterns per head · {entry.label}"):
        if patterns is None:
            st.info(f"**{entry.label}** runs Hugging Face's fused attention: no per-head patterns (docs/MODELS.md).")
            return
        cols = st.columns(2)
        layer = cols[0].selectbox("Layer", range(patterns.shape[0]), key=f"{key}-attn-layer")
        head = cols[1].selectbox("Head", range(patterns.shape[1]), key=f"{key}-attn-head")
        st.plotly_chart(attention_figure(toks, patterns[layer, head], layer, head), width="stretch", key=f"{key}-attn-fig")


@st.cache_data(max_entries=32, show_spinner="Running the model on the text ...")
def residual_streams(path: str, sha: str, text: str) -> tuple[list[str], torch.Tensor]:
    """(token strings, residual streams ``[n_layers + 1, pos, ...]``) for one text.

    Row ``l < n_layers`` is ``blocks.{l}.hook_resid_pre``; the last row is the stream leaving the
    last block, whose lens logits are the model's own final logits. Raises EngramInterpError on
    empty or too-long text.
    """
    model = state.model_for(path, sha)
    tokens = model.to_tokens(text)
    with torch.no_grad():
        return _residual_streams(model, tokens)


def _residual_streams(model, tokens: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    points = model.layer_point_names()
    names = set(points)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    stack = [cache[name][0] for name in points]
    return model.to_str_tokens(tokens[0]), torch.stack(stack).float()


def layer_names(n_layers: int) -> list[str]:
    """Row labels of ``residual_streams``: ``L0`` .. ``L{n-1}`` (stream entering block l), ``final``."""
    return [f"L{l}" for l in range(n_layers)] + ["final"]
