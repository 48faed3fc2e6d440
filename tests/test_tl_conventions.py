"""The conventions TransformerLens users type work on every backend (issue 23 item 2): cfg field names,
to_tokens / to_string / to_single_token, W_U / W_E / b_U, tokens_to_residual_directions, generate with
hooks and engram_suppressed active, and a BOS default that is the one TL's bridge gives the same model."""

import os
import re
from types import SimpleNamespace

import pytest
import torch

from engram_interp.backends.bos import TL_NO_DEFAULT_BOS, TL_UNCOVERED
from engram_interp.backends.huggingface import load_hf
from engram_interp.backends.testing import llama_config, random_hf_model, save_hf_folder, tiny_llama_folder
from engram_interp.errors import EngramInterpError
from engram_interp.testing import tiny_model

TEXT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tlconv")
    from transformers import Qwen2Config

    qwen = Qwen2Config(vocab_size=400, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=1,
                       pad_token_id=2, tie_word_embeddings=False)
    return {"llama": tiny_llama_folder(root / "llama"),  # its tokenizer prepends <|bos|>
            "smol": save_hf_folder(random_hf_model(llama_config()), root / "smol", add_bos=False),  # adds nothing
            "qwen2": save_hf_folder(random_hf_model(qwen), root / "qwen2", add_bos=True)}


@pytest.fixture(scope="module")
def hf(folders):
    return {k: load_hf(v, device="cpu") for k, v in folders.items()}


@pytest.fixture(scope="module", params=["engram", "llama"])
def model(request, hf):
    return tiny_model("engram") if request.param == "engram" else hf["llama"]


def test_cfg_has_tl_field_names(model, hf):
    cfg = model.cfg
    if model.info.backend == "huggingface":
        c = model.hf.config
        want = (c.num_hidden_layers, c.hidden_size, c.vocab_size, c.num_attention_heads,
                c.hidden_size // c.num_attention_heads, c.max_position_embeddings)
    else:
        want = (4, 64, 400, 4, 16, 256)  # testing.tiny_config("engram")
    assert (cfg.n_layers, cfg.d_model, cfg.d_vocab, cfg.n_heads, cfg.d_head, cfg.n_ctx) == want
    assert cfg.device == torch.device("cpu") and cfg.dtype == torch.float32
    assert cfg.normalization_type == "RMS" and not cfg.attn_only
    if model.info.backend == "engram-interp":  # still our ModelConfig, and a copy of the model's own
        assert cfg.engram is not None and model.cfg.to_json()


def test_cfg_dtype_follows_the_model():
    model = tiny_model("dense").to(torch.float64)
    assert model.cfg.dtype == torch.float64


def test_to_tokens_options(model):
    bos = model.info.bos_token_id
    ids = model.encode(TEXT)
    assert model.to_tokens(TEXT)[0].tolist() == [bos] + ids
    assert model.to_tokens(TEXT, prepend_bos=False)[0].tolist() == ids
    assert model.to_tokens(TEXT, prepend_bos=True)[0].tolist() == [bos] + ids
    batch = model.to_tokens([TEXT, "the"], padding_side="left", move_to_device=False)
    short = [bos] + model.encode("the")
    pad = model.info.pad_token_id
    assert batch.device == torch.device("cpu")
    assert batch[1].tolist() == [pad] * (len(ids) + 1 - len(short)) + short
    right = model.to_tokens([TEXT, "the"])
    assert right[1].tolist() == short + [pad] * (len(ids) + 1 - len(short))
    with pytest.raises(EngramInterpError, match="padding_side"):
        model.to_tokens(TEXT, padding_side="middle")


def _one_token(model) -> str:
    return model.decode([model.encode(TEXT)[1]])  # a string the tokenizer makes one token of


def test_strings_and_single_tokens(model):
    tokens = model.to_tokens(TEXT, prepend_bos=False)
    assert model.to_string(tokens[0]) == TEXT and model.to_string(tokens) == [TEXT]
    assert model.to_str_tokens([TEXT, "the"])[1] == model.to_str_tokens("the")
    assert "".join(model.to_str_tokens(TEXT, prepend_bos=False)) == TEXT
    assert model.to_str_tokens(tokens) == model.to_str_tokens(tokens[0])
    one = _one_token(model)
    tid = model.to_single_token(one)
    assert model.encode(one) == [tid] and model.to_string([tid]) == one
    with pytest.raises(EngramInterpError, match="tokens"):
        model.to_single_token(TEXT)


def test_weights_and_residual_directions(model):
    if model.info.backend == "huggingface":
        w_u, w_e = model.hf.lm_head.weight.T, model.hf.model.embed_tokens.weight
    else:
        w_u, w_e = model.unembed.W_U, model.embed.W_E
    assert torch.equal(model.W_U, w_u) and torch.equal(model.W_E, w_e)
    assert torch.equal(model.b_U, torch.zeros(model.cfg.d_vocab))
    with pytest.raises(EngramInterpError, match="rotary"):
        model.W_pos
    ids = torch.tensor([[3, 5], [7, 9]])
    dirs = model.tokens_to_residual_directions(ids)
    assert dirs.shape == (2, 2, model.cfg.d_model) and torch.equal(dirs[1, 0], w_u[:, 7])
    one = _one_token(model)
    assert torch.equal(model.tokens_to_residual_directions(one), w_u[:, model.to_single_token(one)])


def test_greedy_generate_equals_hugging_face_generate(hf):
    model = hf["llama"]
    tokens = model.to_tokens(TEXT)
    ours = model.generate(tokens, max_new_tokens=6, do_sample=False, stop_at_eos=False)
    theirs = model.hf.generate(tokens, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=2)
    assert torch.equal(ours, theirs)
    text = model.generate(TEXT, max_new_tokens=6, do_sample=False, stop_at_eos=False)
    assert isinstance(text, str) and text == model.to_string(ours[0])


def _greedy(model, tokens, n):
    for _ in range(n):
        tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], 1)
    return tokens


def test_generate_runs_hooks_and_engram_suppression():
    model = tiny_model("engram")
    tokens = model.to_tokens(TEXT)
    with torch.no_grad():
        with model.engram_suppressed():
            suppressed = model.generate(tokens, max_new_tokens=5, do_sample=False, stop_at_eos=False)
            assert torch.equal(suppressed, _greedy(model, tokens, 5))
        target = model.to_single_token(_one_token(model))
        steer = model.W_U[:, target] * 1e3

        def push(resid, hook):
            return resid + steer

        with model.hooks(fwd_hooks=[(model.layer_point_names()[-1], push)]):
            steered = model.generate(tokens, max_new_tokens=4, do_sample=False, stop_at_eos=False)
        assert steered[0, -4:].tolist() == [target] * 4
        plain = model.generate(tokens, max_new_tokens=4, do_sample=False, stop_at_eos=False)
        assert plain[0, -4:].tolist() != [target] * 4


def test_sampling_options():
    model = tiny_model("dense")
    tokens = model.to_tokens(TEXT)
    greedy = model.generate(tokens, max_new_tokens=4, do_sample=False, stop_at_eos=False)
    assert torch.equal(model.generate(tokens, max_new_tokens=4, top_k=1, stop_at_eos=False), greedy)
    assert torch.equal(model.generate(tokens, max_new_tokens=4, temperature=0.0, stop_at_eos=False), greedy)
    torch.manual_seed(1)
    a = model.generate(tokens, max_new_tokens=8, temperature=2.0, stop_at_eos=False)
    torch.manual_seed(1)
    assert torch.equal(model.generate(tokens, max_new_tokens=8, temperature=2.0, stop_at_eos=False), a)
    with pytest.raises(EngramInterpError, match="context"):
        model.generate(tokens, max_new_tokens=10_000)


def test_bos_defaults_follow_tl(hf):
    ids = hf["smol"].encode(TEXT)
    assert hf["smol"].to_tokens(TEXT)[0].tolist() == [0] + ids  # no BOS from the tokenizer: its bos_token
    assert hf["qwen2"].to_tokens(TEXT)[0].tolist() == ids  # Qwen family: none by default ...
    assert hf["qwen2"].to_tokens(TEXT, prepend_bos=True)[0].tolist() == [0] + ids  # ... but on request


def test_our_tokenizer_bos_is_what_tl_prepends(tmp_path):
    """TL's own to_tokens (bridge code, its tokenizer set-up) on our tokenizer prepends our BOS."""
    from transformers import PreTrainedTokenizerFast
    from transformer_lens.model_bridge.sources._bridge_builder import configure_tokenizer
    from transformer_lens.model_bridge.transformer_bridge import TransformerBridge

    model = tiny_model("engram")
    PreTrainedTokenizerFast(tokenizer_object=model.tokenizer, bos_token="<|bos|>", eos_token="<|eos|>",
                            pad_token="<|pad|>").save_pretrained(tmp_path)
    tok = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    cfg = SimpleNamespace(default_prepend_bos=True, n_ctx=model.cfg.n_ctx, device="cpu")
    stub = SimpleNamespace(tokenizer=configure_tokenizer(tok, cfg), cfg=cfg)
    assert TransformerBridge.to_tokens(stub, TEXT).tolist() == model.to_tokens(TEXT).tolist()


def _tl_prepends_by_default(cls) -> bool:
    if getattr(cls, "prepend_bos", None) is not None:
        return bool(cls.prepend_bos)
    import inspect

    for klass in cls.__mro__:
        try:
            m = re.search(r"cfg\.default_prepend_bos\s*=\s*(True|False)\b", inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        if m:
            return m.group(1) == "True"
    return True


@pytest.mark.slow
def test_no_bos_table_is_tl_s():
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    from engram_interp.backends.catalog import ROWS

    assert TL_NO_DEFAULT_BOS == {a for a, c in SUPPORTED_ARCHITECTURES.items() if not _tl_prepends_by_default(c)}
    ours = {arch for arch, how, _ in ROWS if how.startswith("HF")}
    assert ours - set(SUPPORTED_ARCHITECTURES) == set(TL_UNCOVERED)


@pytest.mark.slow
def test_bos_equals_transformer_bridge(folders, hf):
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformer_lens.model_bridge import TransformerBridge

    for key in ("smol", "qwen2"):
        bridge = TransformerBridge.boot_transformers(str(folders[key]), device="cpu")
        for prepend in (None, True, False):
            assert bridge.to_tokens(TEXT, prepend_bos=prepend).tolist() == \
                hf[key].to_tokens(TEXT, prepend_bos=prepend).tolist(), (key, prepend)
