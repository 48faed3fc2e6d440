"""Paired training: iso-parameter planner, TOML recipes, token-stream batching, the resumable loop.

- ``planner.py``  MoE baseline -> Engram partner (+ Engram-null control) at equal P_tot (docs/ENGRAM.md section 6)
- ``recipe.py``   the recipe TOML: data, baseline, Engram spec, arms, optimisation, output
- ``data.py``     seeded, resumable windows from uint16 token files; fixed validation windows
- ``loop.py``     AdamW + Adam(5x) tables, balancing, bf16 autocast, eval, resume state, .ckpt + card
Heavy imports (torch, the model) happen inside the functions that need them where possible.
"""

from engram_interp.train.planner import Plan, PlanError, changed_fields, plan_pair
from engram_interp.train.recipe import ArmSpec, Recipe, RecipeError, load_recipe, parse_recipe

__all__ = ["ArmSpec", "Plan", "PlanError", "Recipe", "RecipeError", "changed_fields", "load_recipe", "parse_recipe",
           "plan_pair"]
