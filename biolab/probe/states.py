"""The one interface to hidden states: every probe reads the residual stream through here.

``run_with_cache`` is differentiable (the paper's probes train an embedding update through it);
``collect_states`` gathers chosen positions of every layer for many sequences into a float16 array;
``cached_states`` keeps that array on disk, keyed by what produced it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from biolab.data.tokens import pad_right
from biolab.device import keep_freed_memory
from biolab.io import atomic_write_text, file_sha256


def run_with_cache(
    model, input_ids=None, attention_mask=None, inputs_embeds=None
) -> torch.Tensor:  # [layers+1, batch, seq, d_model]
    """All hidden states of a causal LM: index 0 is the embedding output, ``-1`` the last layer
    (after the final norm, as transformers returns it)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        inputs_embeds=inputs_embeds,
        output_hidden_states=True,
        use_cache=False,
    )
    return torch.stack(out.hidden_states)


@torch.no_grad()
def collect_states(
    model,
    seqs: list[np.ndarray],
    positions: np.ndarray,  # [n, P] indices into each sequence; -1 = absent (zeros returned)
    pad: int,
    batch_size: int = 64,
    desc: str = "hidden states",
) -> np.ndarray:  # [n, layers+1, P, d_model] float16
    """States of every layer at ``positions`` of each sequence, batched, on the model's device."""
    if len(seqs) != len(positions):
        raise ValueError(f"{len(seqs)} sequences but {len(positions)} position rows")
    lengths = np.array([len(s) for s in seqs])
    if (positions >= lengths[:, None]).any():
        raise ValueError("a probe position lies beyond its sequence")
    device = next(model.parameters()).device
    keep_freed_memory(device)
    n_layers = model.config.num_hidden_layers + 1
    out = np.zeros((len(seqs), n_layers, positions.shape[1], model.config.hidden_size), np.float16)
    # Sorting by length keeps padding (wasted compute) small.
    order = np.argsort(lengths, kind="stable")
    was_training = model.training
    model.eval()
    for start in tqdm(range(0, len(seqs), batch_size), desc=desc, disable=len(seqs) < 8 * batch_size):
        rows = order[start : start + batch_size]
        ids, mask = pad_right([seqs[r] for r in rows], pad)
        hs = run_with_cache(model, torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
        pos = torch.from_numpy(np.maximum(positions[rows], 0)).to(device)  # [b, P]
        picked = hs.gather(2, pos[None, :, :, None].expand(hs.shape[0], -1, -1, hs.shape[-1]))
        picked = picked.permute(1, 0, 2, 3).float().cpu().numpy()  # [b, layers+1, P, d]
        picked *= (positions[rows] >= 0)[:, None, :, None]
        out[rows] = picked.astype(np.float16)
    model.train(was_training)
    return out


def states_key(**inputs) -> str:
    """A short hash of whatever determines a states array (model weights, token ids, positions)."""
    h = hashlib.sha256()
    for name in sorted(inputs):
        value = inputs[name]
        h.update(name.encode())
        if isinstance(value, np.ndarray):
            h.update(str(value.dtype).encode() + str(value.shape).encode())
            h.update(np.ascontiguousarray(value).tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def model_fingerprint(model) -> str:
    """Hash of the weights: a cache made by another model (or another init seed) never matches."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_states(cache_dir: str | Path | None, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()`` once; later calls with the same key load ``cache_dir/states-<key>.npy``
    (memory-mapped). Written to a temp name and renamed, so a killed run leaves no half array; its
    sha256 is recorded beside it and checked on every load, so a damaged file is computed again
    (with a warning naming it) instead of feeding probes wrong states or failing forever."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"states-{key}.npy"
    if path.is_file():
        problem = _damage(path)
        if problem is None:
            return np.load(path, mmap_mode="r")
        warnings.warn(f"{path} is damaged ({problem}); computing its states again", stacklevel=2)
    states = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, states)
    record = {"shape": list(states.shape), "sha256": file_sha256(tmp)}
    # The record goes first: a kill between the two writes leaves an old array under a new record,
    # which the next load finds damaged, never a new array trusted under an old record.
    atomic_write_text(path.with_suffix(".json"), json.dumps(record) + "\n")
    tmp.replace(path)
    return states


def _damage(path: Path) -> str | None:
    """Why a cached states file cannot be used, or None. A file cached before hashes were recorded
    is checked for what its header and size promise (a truncated file fails that), and its hash is
    recorded from then on."""
    record_path = path.with_suffix(".json")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return "no readable record beside it"
    if "sha256" in record:
        return None if file_sha256(path) == record["sha256"] else "sha256 mismatch"
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:  # a truncated header or data: numpy's own words
        return str(err).splitlines()[0]
    if list(array.shape) != record.get("shape"):
        return f"shape {list(array.shape)}, recorded {record.get('shape')}"
    del array
    atomic_write_text(record_path, json.dumps({**record, "sha256": file_sha256(path)}) + "\n")
    return None
