"""Integer entropy tables and the ANS coder."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings, strategies as st

from latentarc.codec import entropy
from latentarc.codec.entropy import ChannelModel


@given(st.integers(1, 3000), st.integers(1, 65535), st.integers(0, 65535))
@settings(max_examples=200, deadline=None)
def test_tables_are_exact_and_complete(m, p_zero, theta):
    f = entropy.frequencies(ChannelModel(m, p_zero, theta))
    assert f.size == 2 * m + 1
    assert int(f.sum()) == 1 << entropy.PRECISION_BITS
    assert (f >= 1).all()
    assert np.array_equal(f, f[::-1])  # symmetric


def test_table_is_pinned():
    """Golden check: the integer table for fixed parameters never changes (it defines the format)."""
    f = entropy.frequencies(ChannelModel(40, 30000, 50000))
    assert hashlib.sha256(f.astype("<i8").tobytes()).hexdigest()[:16] == "c987ebacc2b25e2b"


def test_roundtrip_and_payload_close_to_ideal():
    rng = np.random.default_rng(1)
    scales = np.array([0.05, 0.4, 2.0, 9.0, 40.0])[:, None]
    symbols = np.rint(rng.laplace(0, scales, (5, 50_000))).astype(np.int32)
    models = [entropy.fit(s) for s in symbols]
    payload = entropy.encode(symbols, models)
    ideal = sum(entropy.ideal_bits(s, m) for s, m in zip(symbols, models))
    assert len(payload) * 8 <= ideal * 1.001 + 64
    assert np.array_equal(entropy.decode(payload, models, symbols.shape[1]), symbols)


def test_constant_channel_costs_nothing():
    symbols = np.zeros((2, 1000), np.int32)
    models = [entropy.fit(s) for s in symbols]
    assert all(m.max_abs == 0 for m in models)
    payload = entropy.encode(symbols, models)
    assert len(payload) <= 8
    assert not entropy.decode(payload, models, 1000).any()
