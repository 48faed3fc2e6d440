"""Figures (plotly) and the report: every figure the CLI, the report and the app show is made here.

* ``analyses``: LogitLens, CKA, gate and ablation figures;
* ``memory``: the memory inspector's figures and report section;
* ``attribution``: direct logit attribution and activation patching figures;
* ``locate``: the Engram rows behind one prediction (``locate``);
* ``report``: exports (JSON, CSV, one offline HTML file).
"""

from engram_interp.figures.analyses import (cka_figure, gate_figure, gate_selectivity_figure, kl_figure, retained_figure,
                                            shared_kl_log, shared_kl_max, token_label, token_lens_figure)
from engram_interp.figures.locate import locate_figure
from engram_interp.figures.memory import memory_norm_figure, memory_pca_figure, memory_section, memory_usage_figure
from engram_interp.figures.report import REPORT_FILES, attribution_section, seed_section, write_csvs, write_report

__all__ = ["REPORT_FILES", "attribution_section", "cka_figure", "gate_figure", "gate_selectivity_figure", "kl_figure", "locate_figure",
           "memory_norm_figure", "memory_pca_figure", "memory_section", "memory_usage_figure", "retained_figure",
           "seed_section", "shared_kl_log", "shared_kl_max", "token_label", "token_lens_figure", "write_csvs", "write_report"]
