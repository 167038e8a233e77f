import numpy as np
import pytest
import torch

from biolab.model import ModelConfig, build_model
from biolab.probe.states import cached_states, collect_states, model_fingerprint, run_with_cache, states_key


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(name="t", n_layer=2, n_head=2, d_model=32, max_positions=64)
    return build_model(cfg, vocab_size=50, eos_token_id=0, pad_token_id=1).eval()


def test_run_with_cache_returns_every_layer_with_the_embedding_first(model):
    ids = torch.tensor([[0, 5, 6, 7]])
    hs = run_with_cache(model, ids)
    assert hs.shape == (3, 1, 4, 32)  # [layers+1, batch, seq, d]
    assert torch.allclose(hs[0], model.get_input_embeddings()(ids))


def test_collected_states_match_one_unpadded_forward_per_sequence(model):
    rng = np.random.default_rng(0)
    seqs = [rng.integers(2, 50, size=n) for n in (5, 9, 3, 12)]
    pos = np.array([[0, 4], [8, 2], [2, -1], [11, 0]])
    states = collect_states(model, seqs, pos, pad=1, batch_size=3)
    assert states.shape == (4, 3, 2, 32) and states.dtype == np.float16
    for i, s in enumerate(seqs):
        ref = run_with_cache(model, torch.tensor(s[None]))[:, 0]  # [layers+1, seq, d]
        for j, p in enumerate(pos[i]):
            want = np.zeros((3, 32)) if p < 0 else ref[:, p].detach().numpy()
            np.testing.assert_allclose(states[i, :, j], want, atol=2e-3, rtol=2e-3)


def test_a_position_past_the_end_is_an_error(model):
    with pytest.raises(ValueError, match="beyond"):
        collect_states(model, [np.array([2, 3])], np.array([[2]]), pad=1)


def test_states_are_cached_on_disk_and_keyed_by_their_inputs(model, tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.ones((2, 3), np.float16)

    key = states_key(model=model_fingerprint(model), pos=np.array([1, 2]))
    a = cached_states(tmp_path, key, compute)
    b = cached_states(tmp_path, key, compute)
    assert len(calls) == 1 and np.array_equal(a, b)
    assert states_key(model=model_fingerprint(model), pos=np.array([1, 3])) != key
    torch.manual_seed(1)
    other = build_model(ModelConfig(name="t", n_layer=2, n_head=2, d_model=32, max_positions=64), 50, 0, 1)
    assert model_fingerprint(other) != model_fingerprint(model)
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def _cache_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return WANT.copy()

    cached_states(tmp_path, "k", compute)
    return calls, compute


WANT = np.arange(4096, dtype=np.float16).reshape(64, 64)


def test_flipped_bytes_in_cached_states_are_found_and_computed_again(tmp_path):
    calls, compute = _cache_once(tmp_path)
    path = tmp_path / "states-k.npy"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # a value, not the header: numpy alone would load it without complaint
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=r"states-k\.npy is damaged \(sha256 mismatch\)"):
        again = cached_states(tmp_path, "k", compute)
    assert len(calls) == 2 and np.array_equal(again, WANT)
    assert np.array_equal(cached_states(tmp_path, "k", compute), WANT) and len(calls) == 2


def test_a_truncated_states_file_is_computed_again_naming_the_file(tmp_path):
    calls, compute = _cache_once(tmp_path)
    path = tmp_path / "states-k.npy"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="states-k.npy is damaged"):
        assert np.array_equal(cached_states(tmp_path, "k", compute), WANT)
    assert len(calls) == 2


def test_states_cached_before_hashes_are_checked_by_shape_and_size_then_hashed(tmp_path):
    calls, compute = _cache_once(tmp_path)
    record = tmp_path / "states-k.json"
    record.write_text('{"shape": [64, 64]}\n')  # as older biolab wrote it
    assert np.array_equal(cached_states(tmp_path, "k", compute), WANT) and len(calls) == 1
    assert "sha256" in record.read_text()
    record.write_text('{"shape": [64, 64]}\n')
    path = tmp_path / "states-k.npy"
    path.write_bytes(path.read_bytes()[:1000])  # the case that failed forever ("mmap length ...")
    with pytest.warns(UserWarning, match="states-k.npy is damaged"):
        cached_states(tmp_path, "k", compute)
    assert len(calls) == 2
