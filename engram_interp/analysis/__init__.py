"""The four analyses of docs/ANALYSES.md as streaming accumulators plus high-level functions.

High-level (model(s) + texts/suites -> a result dataclass with ``.to_dict()`` / ``.to_json()``);
the CLI, ``engram_interp.figures`` and the Streamlit app all call these:

- ``logit_lens(models, texts, ...) -> LogitLensResult``: KL(p_final || q_layer) per layer, nats.
  ``models``: a model, a list, or ``{name: model}``. ``.models[i]`` is a ``LensCurve``
  (name, layers, kl, kl_sem, entropy, n_tokens).
- ``logit_lens_tokens(model, text, top_k=5) -> TokenLens``: layer x position KL/entropy + top tokens.
- ``cka_analysis(model_a, model_b=None, texts, tokens="all"|"entities"|positions, ...) -> CKAResult``
  (layers_a, layers_b, cka, ci_low, ci_high, soft_alignment, soft_alignment_ci, argmax, n_examples).
- ``gate_map(model, text) -> GateMap`` (tokens, gates {layer: [pos][branch]}, suffix n-grams).
- ``gate_corpus(model, texts, min_count=3, ...) -> GateCorpusResult`` (per-channel mean gate,
  selectivity, branch_ranking, top/bottom n-grams).
- ``ablation_sensitivity(models, suites, mode="zero"|"mean", ...) -> AblationResult``
  (``.suites[name]`` -> SuiteScore full, ablated, retained %, ci, per_layer); suites come from
  ``engram_interp.data.suite_files.read_suites(paths)``.

Math / accumulators (tensors in, tensors out; state = sums, ``.all_reduce()`` over torch.distributed):

- ``minibatch_cka(acts_a, acts_b=None, batch_size)``: lists of ``[N, d]`` -> ``[L_a, L_b]`` float64.
- ``CKAAccumulator``, ``soft_alignment(cka, k)``, ``cka_argmax(cka)``, ``u_centred_grams``.
- ``LogitLensAccumulator``, ``lens_kl_batch(model, tokens, mask)``.
- ``GateNgramAccumulator``; ``AblationAccumulator``, ``score_items``, ``mean_engram_output``.

Layer points everywhere: ``blocks.{l}.hook_resid_pre`` for l = 0..L-1, then the last
``hook_resid_post`` (labelled 0..L); mHC streams go through ``model.readout``.
"""

from engram_interp.analysis.ablation import (
    AblationAccumulator, AblationResult, SuiteScore, ablation_sensitivity, mean_engram_output, score_items,
)
from engram_interp.analysis.cka import CKAAccumulator, cka_argmax, minibatch_cka, soft_alignment, u_centred_grams
from engram_interp.analysis.cka_models import CKAResult, cka_analysis
from engram_interp.analysis.common import default_texts, read_entity_probes, read_texts
from engram_interp.analysis.gates import GateCorpusResult, GateMap, GateNgramAccumulator, NgramStat, gate_corpus, gate_map
from engram_interp.analysis.logit_lens import (
    LensCurve, LogitLensAccumulator, LogitLensResult, TokenLens, lens_kl_batch, logit_lens, logit_lens_tokens,
)

__all__ = [
    "AblationAccumulator", "AblationResult", "CKAAccumulator", "CKAResult", "GateCorpusResult", "GateMap",
    "GateNgramAccumulator", "LensCurve", "LogitLensAccumulator", "LogitLensResult", "NgramStat", "SuiteScore",
    "TokenLens", "ablation_sensitivity", "cka_analysis", "cka_argmax", "default_texts", "gate_corpus", "gate_map",
    "lens_kl_batch", "logit_lens", "logit_lens_tokens", "mean_engram_output", "minibatch_cka", "read_entity_probes",
    "read_texts", "score_items", "soft_alignment", "u_centred_grams",
]
