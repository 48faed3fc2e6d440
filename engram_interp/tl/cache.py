"""TransformerLens's ``ActivationCache`` over our hook names: what ``run_with_cache`` returns on every backend.

:class:`EngramActivationCache` is TL's class with four things changed, each because our models are not
weight-processed TL models (docs/HOOKS.md, "Coming from TransformerLens"):

- the final norm is applied as the model applies it (``final_norm`` / ``final_norm_frozen``, its weight
  included), so ``stack @ model.W_U + model.b_U`` are logits without folding LayerNorm into ``W_U``;
- ``decompose_resid`` and ``get_full_resid_decomposition`` add each Engram layer's output Y
  (``blocks.{l}.engram.hook_out``, label ``{l}_engram``), so the parts sum to the residual stream;
- per-head results come from ``blocks.{l}.attn.hook_z`` and the backend's ``attn_output_weight``;
- a hook the model lacks (or that was not cached) is one :class:`MissingHookError` naming it.

Dict-style access (``cache["blocks.1.engram.hook_gate"]``, ``name in cache``, ``keys()``) is unchanged.
"""

from __future__ import annotations

import torch
from transformer_lens.ActivationCache import ActivationCache
from transformer_lens.utilities import Slice, get_act_name

from engram_interp.errors import EngramInterpError

__all__ = ["EngramActivationCache", "MissingHookError"]


class MissingHookError(EngramInterpError, KeyError):
    """A cache method needs a hook the model does not have or the run did not cache (its name is in the
    message). A ``KeyError`` too, so ``except KeyError`` code written for TL keeps working."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class EngramActivationCache(ActivationCache):
    """TL's ``ActivationCache`` for an :class:`~engram_interp.interface.InterpModel` (see the module doc)."""

    # ---- access ----------------------------------------------------------------------------------
    def __contains__(self, key) -> bool:
        return key in self.cache_dict

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, str) and key in self.cache_dict:
            return self.cache_dict[key]
        try:
            return super().__getitem__(key)
        except KeyError:
            raise MissingHookError(self._missing(key)) from None

    def _missing(self, key) -> str:
        try:
            if isinstance(key, str):
                name = get_act_name(key)
            else:
                layer = key[1] if len(key) > 1 else None
                if isinstance(layer, int) and layer < 0:
                    layer += self.model.cfg.n_layers
                name = get_act_name(key[0], layer, *key[2:])
        except Exception:  # noqa: BLE001 - TL's shorthand parser raises on odd keys
            name = str(key)
        info = self.model.info
        if name in getattr(self.model, "hook_dict", {}):
            return f"hook {name!r} was not cached in this run (widen names_filter to include it)"
        return f"this {info.architecture} model has no hook {name!r} (docs/HOOKS.md lists the hooks of each backend)"

    def _rewrap(self, cache: ActivationCache) -> "EngramActivationCache":
        return EngramActivationCache(cache.cache_dict, self.model, has_batch_dim=cache.has_batch_dim)

    def apply_slice_to_batch_dim(self, batch_slice) -> "EngramActivationCache":
        return self._rewrap(super().apply_slice_to_batch_dim(batch_slice))

    def logit_lens(self, **kwargs):
        """TL 4.3's one-call lens reads TL's own module layout, which our backends do not have: refused in
        one line that says what gives the same numbers."""
        raise EngramInterpError("cache.logit_lens() needs TransformerLens's own modules; use "
                                "cache.accumulated_resid(apply_ln=True) @ model.W_U + model.b_U (the same lens) or "
                                "`engram-interp logit-lens`")

    def _single_stream(self, what: str) -> None:
        m = self.model.info.n_branches
        if m > 1:
            raise EngramInterpError(
                f"{what} of a {m}-stream (hyper-connection) model: its streams are mixed between sublayers, so "
                f"component outputs do not add up to the stream; direct logit attribution (`attribute`, "
                f"analysis/attribution.py) carries each write through the mixings"
            )

    # ---- norms -------------------------------------------------------------------------------------
    def apply_ln_to_stack(self, residual_stack: torch.Tensor, layer: int | None = None, mlp_input: bool = False,
                          pos_slice=None, batch_slice=None, has_batch_dim: bool = True,
                          recompute_ln: bool = False) -> torch.Tensor:
        """The norm that reads the stream at ``layer`` applied to every component of ``residual_stack``
        ``[components, *batch_and_pos, d_model]``.

        At the unembed (``layer`` = n_layers, -1 or None) the model's own final norm, weight included:
        with ``recompute_ln`` statistics from each component (``model.final_norm(model.readout(x))``,
        the LogitLens), otherwise frozen at the cached final stream (``model.final_norm_frozen``: a
        linear map, so components add up; direct logit attribution). At an inner layer TL's
        convention: division by the RMS of that sublayer's input, from ``blocks.{layer}.ln1|ln2.hook_scale``."""
        pos_slice, batch_slice = _slice(pos_slice), _slice(batch_slice)
        n = self.model.cfg.n_layers
        layer = n if layer is None or layer == -1 else layer
        if has_batch_dim:
            residual_stack = batch_slice.apply(residual_stack, dim=1)
        if layer == n and recompute_ln:
            return torch.stack([self._lens_normed(x) for x in residual_stack])
        self._single_stream("apply_ln_to_stack without recompute_ln")
        if layer == n:
            ref = pos_slice.apply(self[self.model.layer_point_names()[-1]], dim=-2)
            if has_batch_dim and self.has_batch_dim:
                ref = batch_slice.apply(ref)
            return self.model.final_norm_frozen(residual_stack, ref.expand_as(residual_stack))
        scale = pos_slice.apply(self[f"blocks.{layer}.ln{2 if mlp_input else 1}.hook_scale"], dim=-2)
        if has_batch_dim and self.has_batch_dim:
            scale = batch_slice.apply(scale)
        return residual_stack * scale.to(residual_stack.dtype)  # our hook_scale is 1 / RMS

    def _lens_normed(self, x: torch.Tensor) -> torch.Tensor:
        """One component ``[*batch_and_pos, (branch,) d]`` -> the final norm of the head's readout ``[..., d]``."""
        if self.model.info.n_branches == 1:
            return self.model.final_norm(x)
        m, d = x.shape[-2], x.shape[-1]
        flat = self.model.readout(x.reshape(1, -1, m, d))  # readout takes [batch, pos, branch, d]
        return self.model.final_norm(flat).reshape(*x.shape[:-2], -1)

    # ---- decompositions ------------------------------------------------------------------------
    def decompose_resid(self, layer: int | None = None, mlp_input: bool = False, mode: str = "all",
                        apply_ln: bool = False, pos_slice=None, incl_embeds: bool = True,
                        return_labels: bool = False):
        """The residual stream entering ``layer`` (``blocks.{layer}.hook_resid_pre``; the final stream for
        n_layers / -1 / None) as a stack of what wrote it: ``embed``, then per block ``{l}_engram`` (Engram
        layers, ``mode="all"`` only), ``{l}_attn_out``, ``{l}_mlp_out``; with ``mlp_input`` also that
        block's Engram and attention. The stack sums to the stream (single-stream models)."""
        self._single_stream("decompose_resid")
        pos_slice = _slice(pos_slice)
        n = self.model.cfg.n_layers
        layer = n if layer is None or layer == -1 else layer
        names, labels = self._writers(layer, mlp_input, mode, incl_embeds)
        if not names:
            raise EngramInterpError(f"decompose_resid(layer={layer}, mode={mode!r}) has no component to stack")
        stack = torch.stack([pos_slice.apply(self[name], dim=-2) for name in names])
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice, mlp_input=mlp_input)
        return (stack, labels) if return_labels else stack

    def _writers(self, layer: int, mlp_input: bool, mode: str, incl_embeds: bool) -> tuple[list[str], list[str]]:
        if mode not in ("all", "attn", "mlp"):
            raise EngramInterpError(f"mode must be 'all', 'attn' or 'mlp', not {mode!r}")
        engram = set(self.model.info.engram_layers)
        names, labels = [], []
        if incl_embeds:
            for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
                if name == "hook_embed" or name in self.cache_dict:  # a missing hook_embed is named, not skipped
                    names.append(name)
                    labels.append(label)
        for l in range(layer + (1 if mlp_input else 0)):
            current = l == layer
            if mode == "all" and l in engram:
                names.append(f"blocks.{l}.engram.hook_out")
                labels.append(f"{l}_engram")
            if mode != "mlp":
                names.append(f"blocks.{l}.hook_attn_out")
                labels.append(f"{l}_attn_out")
            if mode != "attn" and not current:
                names.append(f"blocks.{l}.hook_mlp_out")
                labels.append(f"{l}_mlp_out")
        return names, labels

    def _ensure_head_results(self) -> bool:
        """``blocks.{l}.attn.hook_result`` ``[*batch_and_pos, head, d_model]`` from ``hook_z`` and the
        backend's per-head output projection (``attn_output_weight``); True if all were cached already."""
        all_cached = True
        for layer in range(self.model.cfg.n_layers):
            key = f"blocks.{layer}.attn.hook_result"
            if key in self.cache_dict:
                continue
            all_cached = False
            z = self[f"blocks.{layer}.attn.hook_z"]
            w_o = self.model.attn_output_weight(layer)  # [head, d_head, d_model]
            dtype = torch.promote_types(z.dtype, w_o.dtype)
            self.cache_dict[key] = torch.einsum("...hd,hdm->...hm", z.to(dtype), w_o.to(dtype))
        return all_cached

    def get_full_resid_decomposition(self, layer: int | None = None, mlp_input: bool = False,
                                     expand_neurons: bool = True, apply_ln: bool = False, pos_slice=None,
                                     return_labels: bool = False, project_output_onto: torch.Tensor | None = None):
        """The stream entering ``layer`` split into every attention head (``L{l}H{h}``), every Engram layer
        (``{l}_engram``), every FFN (``{l}_mlp_out``), the embedding and ``bias`` (the attention output
        biases: ``attn_out`` minus its heads). Sums to the stream. Per-neuron FFN terms are not exposed:
        ``expand_neurons=True`` is a :class:`MissingHookError` naming ``blocks.{l}.mlp.hook_post``."""
        self._single_stream("get_full_resid_decomposition")
        if expand_neurons:
            raise MissingHookError(
                "get_full_resid_decomposition(expand_neurons=True) needs per-neuron FFN activations "
                "('blocks.{l}.mlp.hook_post'), which these backends do not expose; pass expand_neurons=False"
            )
        pos_slice = _slice(pos_slice)
        n = self.model.cfg.n_layers
        layer = n if layer is None or layer == -1 else layer
        upto = layer + (1 if mlp_input else 0)
        heads, labels = self.stack_head_results(upto, pos_slice=pos_slice, return_labels=True)
        rest_names, rest_labels = self._writers(layer, mlp_input, "all", incl_embeds=True)
        keep = [i for i, lab in enumerate(rest_labels) if not lab.endswith(("_attn_out", "embed"))]
        keep += [i for i, lab in enumerate(rest_labels) if lab.endswith("embed")]  # TL's order: embeddings last
        parts = [heads] + [pos_slice.apply(self[rest_names[i]], dim=-2)[None] for i in keep]
        labels = labels + [rest_labels[i] for i in keep]
        bias = torch.zeros_like(parts[-1][0])
        for l in range(upto):  # o_proj biases: whatever attn_out holds beyond its heads
            bias = bias + pos_slice.apply(self[f"blocks.{l}.hook_attn_out"], dim=-2) - \
                pos_slice.apply(self[f"blocks.{l}.attn.hook_result"], dim=-3).sum(-2)
        stack = torch.cat(parts + [bias[None]])
        labels.append("bias")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice, mlp_input=mlp_input)
        if project_output_onto is not None:
            stack = stack @ project_output_onto.to(stack.dtype)
        return (stack, labels) if return_labels else stack


def _slice(s) -> Slice:
    return s if isinstance(s, Slice) else Slice(s)
