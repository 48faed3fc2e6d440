"""Training recipes: one TOML file describes a paired Engram-vs-MoE experiment.

Sections (every field is documented in checkpoints/recipes/README.md):
    name, seed, description      top level; ``seed``: init and data order of every arm without -seedN
    [data]    dir, tokenizer     token streams (train.bin, val_*.bin, meta.json) and tokenizer.json
    [model]   + [model.moe]      the MoE baseline backbone (vocab_size comes from the tokenizer)
    [engram]                     layer_ids, max_ngram_size, n_head_per_ngram, n_embed_per_ngram, rho, ...
    arms                         ["engram", "moe", "engram-null", "moe-seed1", ...]: kind[-seedN]; seed N
                                 sets both the init and the data order (arms of one seed see the same batches)
    [train]                      tokens, batch_size, seq_len, lr, warmup, cosine decay, wd, clip, eval, ...
    [output]  dir                where ARM.ckpt, ARM.log.jsonl, ARM.card.md and resume states go
Unknown fields are errors that name the field; relative paths are relative to the working directory.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engram_interp.config import EngramConfig, ModelConfig
from engram_interp.errors import ConfigError

ARM_KINDS = ("engram", "moe", "engram-null")
_ARM_RE = re.compile(r"^(engram-null|engram|moe)(?:-seed(\d+))?$")
# EngramConfig fields a recipe may set besides the planned ones (table sizes are planned, never given)
_ENGRAM_PASSTHROUGH = ("seed", "kernel_size", "pad_id", "signed_sqrt_gate", "use_conv", "proj_bias")


class RecipeError(ConfigError):
    """A recipe field is missing, unknown or invalid; the message names it."""


@dataclass(frozen=True)
class DataSpec:
    dir: Path  # holds train.bin, val_real.bin, val_world.bin (uint16 token ids) and meta.json
    tokenizer: Path  # a `tokenizers` JSON file; ids 0/1/2 = bos/eos/pad


@dataclass(frozen=True)
class EngramSpec:
    layer_ids: tuple[int, ...] = (1,)  # 0-indexed Engram blocks
    max_ngram_size: int = 3  # N
    n_head_per_ngram: int = 8  # K
    n_embed_per_ngram: int = 128  # width per order (split over K heads)
    rho: float = 0.75  # target share of P_sparse held by routed experts
    options: tuple[tuple[str, Any], ...] = ()  # other EngramConfig fields (seed, use_conv, ...)

    def template(self) -> EngramConfig:
        """The unresolved EngramConfig; the planner fills in engram_vocab_size."""
        return EngramConfig(
            layer_ids=self.layer_ids, max_ngram_size=self.max_ngram_size, n_head_per_ngram=self.n_head_per_ngram,
            n_embed_per_ngram=self.n_embed_per_ngram, engram_vocab_size=(2,) * (self.max_ngram_size - 1),
            **dict(self.options),
        )


@dataclass(frozen=True)
class ArmSpec:
    name: str  # "engram", "moe-seed1", ...: also the output file stem
    kind: str  # "engram" | "moe" | "engram-null"
    seed: int  # model init seed
    data_seed: int  # data-order seed: the recipe seed, or N for KIND-seedN (init and order both change)


@dataclass(frozen=True)
class TrainSpec:
    tokens: int = 100_000_000  # training tokens per arm (steps = ceil(tokens / (batch_size * seq_len)))
    batch_size: int = 64  # sequences per optimizer step
    seq_len: int = 512  # tokens per sequence (loss on seq_len - 1 next-token targets)
    lr: float = 2e-3  # peak AdamW learning rate of the backbone
    engram_lr_mult: float = 5.0  # Engram tables: Adam (no weight decay) at this multiple of lr
    warmup_steps: int = 100  # linear warmup from 0
    min_lr_ratio: float = 0.1  # cosine decay ends at min_lr_ratio * lr
    weight_decay: float = 0.1  # AdamW decay, matrices only (never tables, norms, biases)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    eval_interval: int = 250  # steps between validations (and at the last step)
    eval_tokens: int = 524_288  # validation tokens per source (fixed windows)
    log_interval: int = 10  # steps between log lines
    compile: str = "auto"  # "auto" (on for CUDA), "true", "false": torch.compile of the training forward
    autocast: str = "auto"  # "auto" (bfloat16 on CUDA, none on CPU), "bfloat16", "none"
    save_dtype: str = "float32"  # dtype of the final .ckpt weights: "float32" or "bfloat16"

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        return -(-self.tokens // self.tokens_per_step)


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: int  # init seed and data-order seed of every arm without -seedN
    data: DataSpec
    model: dict[str, Any]  # baseline ModelConfig fields (nested "moe"), without vocab_size
    engram: EngramSpec
    arms: tuple[ArmSpec, ...]
    train: TrainSpec
    output_dir: Path
    description: str = ""
    text: str = ""  # the full recipe text, stored in every checkpoint's provenance
    path: Path | None = None
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE applied on top of the text

    def arm(self, name: str) -> ArmSpec:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise RecipeError(f"arm {name!r} is not in this recipe (arms: {', '.join(a.name for a in self.arms)})")

    def baseline_config(self, vocab_size: int) -> ModelConfig:
        """The MoE baseline for a tokenizer of ``vocab_size`` ids."""
        try:
            return ModelConfig.from_dict({**self.model, "vocab_size": vocab_size})
        except ConfigError as exc:
            raise RecipeError(f"[model]: {exc}") from None


# ---- loading ---------------------------------------------------------------------------------
_TOP = {"name", "seed", "description", "data", "model", "engram", "arms", "train", "output"}


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read and validate a recipe; ``overrides`` are "section.key=TOML value" strings applied first."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"no such recipe file: {path}")
    text = path.read_text()
    return parse_recipe(text, path=path, overrides=overrides)


def parse_recipe(text: str, path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path or 'recipe'} is not valid TOML: {exc}") from None
    for item in overrides:
        _apply_override(raw, item)
    _unknown(raw, _TOP, "")
    for section in ("data", "model", "engram", "train", "output"):
        if section not in raw:
            raise RecipeError(f"recipe lacks the [{section}] section")
        if not isinstance(raw[section], dict):
            raise RecipeError(f"recipe field {section} must be a table ([{section}])")
    name = raw.get("name") or (path.stem if path else "recipe")
    seed = _int(raw.get("seed", 0), "seed", minimum=0)

    data = raw["data"]
    _unknown(data, {"dir", "tokenizer"}, "data.")
    for key in ("dir", "tokenizer"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise RecipeError(f"data.{key} must be a path string")
    data_spec = DataSpec(dir=Path(data["dir"]), tokenizer=Path(data["tokenizer"]))

    model = dict(raw["model"])
    if "vocab_size" in model:
        raise RecipeError("model.vocab_size is not set in a recipe: it is the tokenizer's vocabulary size")
    if "engram" in model:
        raise RecipeError("model.engram is not set in a recipe: use the [engram] section (the planner sizes it)")
    if not isinstance(model.get("moe"), dict):
        raise RecipeError("model.moe is required: the baseline is a DeepSeekMoE model ([model.moe])")
    try:  # field names and types, with a placeholder vocabulary
        ModelConfig.from_dict({**model, "vocab_size": 8192})
    except ConfigError as exc:
        # the config quotes the field name ('d_expertt'); a recipe names it as its TOML key path
        msg = re.sub(r"unknown config field ([\w.]*)'([^']*)'", r"unknown recipe field model.\1\2", str(exc))
        msg = msg.replace("unknown config field ", "unknown recipe field model.")
        raise RecipeError(f"[model]: {msg}") from None

    engram = dict(raw["engram"])
    known_e = {"layer_ids", "max_ngram_size", "n_head_per_ngram", "n_embed_per_ngram", "rho", *_ENGRAM_PASSTHROUGH}
    _unknown(engram, known_e, "engram.")
    if not isinstance(engram.get("layer_ids"), list) or not engram["layer_ids"]:
        raise RecipeError("engram.layer_ids must be a non-empty list of block indices")
    rho = _float(engram.get("rho", 0.75), "engram.rho")
    if not 0.0 < rho < 1.0:
        raise RecipeError(f"engram.rho must be in (0, 1), got {rho}")
    engram_spec = EngramSpec(
        layer_ids=tuple(_int(v, "engram.layer_ids", minimum=0) for v in engram["layer_ids"]),
        max_ngram_size=_int(engram.get("max_ngram_size", 3), "engram.max_ngram_size", minimum=2),
        n_head_per_ngram=_int(engram.get("n_head_per_ngram", 8), "engram.n_head_per_ngram", minimum=1),
        n_embed_per_ngram=_int(engram.get("n_embed_per_ngram", 128), "engram.n_embed_per_ngram", minimum=1),
        rho=rho,
        options=tuple(sorted((k, engram[k]) for k in _ENGRAM_PASSTHROUGH if k in engram)),
    )
    try:
        engram_spec.template().validate(int(model.get("n_layers", ModelConfig.n_layers)))
    except (ConfigError, TypeError) as exc:
        raise RecipeError(f"[engram]: {exc}") from None

    arms = raw.get("arms", ["engram", "moe", "engram-null"])
    if not isinstance(arms, list) or not arms:
        raise RecipeError('arms must be a non-empty list such as ["engram", "moe", "engram-null"]')
    arm_specs = []
    for item in arms:
        m = _ARM_RE.match(item) if isinstance(item, str) else None
        if m is None:
            raise RecipeError(f"arms: {item!r} is not KIND or KIND-seedN with KIND one of {', '.join(ARM_KINDS)}")
        arm_seed = int(m.group(2)) if m.group(2) else seed
        arm_specs.append(ArmSpec(name=item, kind=m.group(1), seed=arm_seed, data_seed=arm_seed))
    if len({a.name for a in arm_specs}) != len(arm_specs):
        raise RecipeError(f"arms has duplicates: {arms}")

    train_spec = _train_spec(raw["train"])
    max_seq = int(model.get("max_seq_len", ModelConfig.max_seq_len))
    if train_spec.seq_len > max_seq:
        raise RecipeError(f"train.seq_len={train_spec.seq_len} exceeds model.max_seq_len={max_seq}")

    output = raw["output"]
    _unknown(output, {"dir"}, "output.")
    if not isinstance(output.get("dir"), str) or not output["dir"]:
        raise RecipeError("output.dir must be a path string")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise RecipeError("description must be a string")
    return Recipe(
        name=str(name), seed=seed, data=data_spec, model=model, engram=engram_spec, arms=tuple(arm_specs),
        train=train_spec, output_dir=Path(output["dir"]), description=description, text=text, path=path,
        overrides=tuple(overrides),
    )


def _train_spec(table: dict[str, Any]) -> TrainSpec:
    known = {f.name: f for f in fields(TrainSpec)}
    _unknown(table, set(known), "train.")
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        default = known[key].default
        if isinstance(default, str):
            if not isinstance(value, (str, bool)):
                raise RecipeError(f"train.{key} must be a string, got {value!r}")
            kwargs[key] = str(value).lower()
        elif isinstance(default, int):
            kwargs[key] = _int(value, f"train.{key}", minimum=0)
        else:
            kwargs[key] = _float(value, f"train.{key}")
    spec = TrainSpec(**kwargs)
    for key in ("tokens", "batch_size", "seq_len", "eval_interval", "log_interval"):
        if getattr(spec, key) <= 0:
            raise RecipeError(f"train.{key} must be > 0, got {getattr(spec, key)}")
    if spec.seq_len < 2:
        raise RecipeError("train.seq_len must be >= 2")
    if spec.lr <= 0 or spec.engram_lr_mult <= 0:
        raise RecipeError("train.lr and train.engram_lr_mult must be > 0")
    if not 0.0 <= spec.min_lr_ratio <= 1.0:
        raise RecipeError(f"train.min_lr_ratio must be in [0, 1], got {spec.min_lr_ratio}")
    if spec.weight_decay < 0 or spec.grad_clip < 0 or spec.eps <= 0:
        raise RecipeError("train.weight_decay and train.grad_clip must be >= 0, train.eps > 0")
    if not (0.0 <= spec.beta1 < 1.0 and 0.0 <= spec.beta2 < 1.0):
        raise RecipeError("train.beta1 and train.beta2 must be in [0, 1)")
    if spec.compile not in {"auto", "true", "false"}:
        raise RecipeError(f'train.compile must be "auto", true or false, got {spec.compile!r}')
    if spec.autocast not in {"auto", "bfloat16", "none"}:
        raise RecipeError(f'train.autocast must be "auto", "bfloat16" or "none", got {spec.autocast!r}')
    if spec.save_dtype not in {"float32", "bfloat16"}:
        raise RecipeError(f'train.save_dtype must be "float32" or "bfloat16", got {spec.save_dtype!r}')
    return spec


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. train.tokens=50e6")
    key, value = item.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare string such as data.dir=/tmp/x
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"--set {key}: {part} is not a table")
    node[parts[-1]] = parsed


def _unknown(table: dict[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise RecipeError(f"unknown recipe field {prefix}{unknown[0]} (known: {', '.join(sorted(known))})")


def _int(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, float) and value.is_integer():  # 100e6 is fine for a token count
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecipeError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise RecipeError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeError(f"{name} must be a number, got {value!r}")
    return float(value)


__all__ = ["ARM_KINDS", "ArmSpec", "DataSpec", "EngramSpec", "Recipe", "RecipeError", "TrainSpec", "load_recipe",
           "parse_recipe"]
