"""The HF side of benchmarks/bench_encode.py, in its own process (torch only, no TensorFlow).

transformers' ``RoFormerModel`` built from an exported folder (``config.json``,
``model.safetensors``, ``pooler.safetensors`` as written by bench_encode.py from
``export.hf_config``/``export.hf_weights``), the pooler as a torch Linear on
[CLS]. Encoding as sentence-transformers does: sort by length, batches of 64,
each padded to its longest row, ``torch.inference_mode``, input order restored.
It runs in a separate process because torch's OpenMP threads and TensorFlow's
thread pools slow each other down when they share one (measured: 3× slower
torch calls).

Protocol (one JSON object per line on stdin, one reply per line on stdout):
``{"init": folder, "threads": n, "ids": path.npz}`` (``ids`` flat, ``lengths``) then ``{"run": out.npy}``
(encode the ids, save the vectors, reply with the seconds) and ``{"quit": 1}``.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import RoFormerConfig, RoFormerModel


def build(folder: str) -> tuple[RoFormerModel, torch.nn.Linear]:
    config = RoFormerConfig(**json.load(open(f"{folder}/config.json", encoding="utf-8")))
    model = RoFormerModel(config).eval()
    state = {k[len("roformer."):]: torch.from_numpy(v) for k, v in load_file(f"{folder}/model.safetensors").items()
             if k.startswith("roformer.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    pooler_state = load_file(f"{folder}/pooler.safetensors")
    pooler = torch.nn.Linear(*pooler_state["weight"].shape[::-1])
    pooler.load_state_dict({k: torch.from_numpy(v) for k, v in pooler_state.items()})
    return model, pooler.eval()


def encode(model, pooler, ids: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(ids), pooler.out_features), np.float32)
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            index = order[start : start + batch_size]
            rows = [ids[i] for i in index]
            batch = np.zeros((len(rows), max(len(r) for r in rows)), np.int64)
            for r, row in enumerate(rows):
                batch[r, : len(row)] = row
            tokens = torch.from_numpy(batch)
            hidden = model(input_ids=tokens, attention_mask=(tokens != 0).long(),
                           token_type_ids=torch.zeros_like(tokens)).last_hidden_state
            out[index] = pooler(hidden[:, 0]).numpy()
    return out


def main() -> None:
    model = pooler = ids = None
    for line in sys.stdin:
        message = json.loads(line)
        if "init" in message:
            torch.set_num_threads(int(message["threads"]))
            model, pooler = build(message["init"])
            with np.load(message["ids"]) as data:
                ids = np.split(data["ids"], np.cumsum(data["lengths"])[:-1])
            reply = {"threads": torch.get_num_threads(), "torch": torch.__version__}
        elif "run" in message:
            start = time.perf_counter()
            vectors = encode(model, pooler, ids)
            reply = {"seconds": time.perf_counter() - start}
            np.save(message["run"], vectors)
        else:
            break
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
