"""The zero-phase band-pass of a preprocessing spec as block matrices, for a model's graph (torch-free).

``scipy.signal.filtfilt(b, a, x)`` on a window of ``n`` samples is a fixed linear map: odd extension by ``padlen``
samples, a forward ``lfilter`` started from ``lfilter_zi`` scaled by the first sample, the same backward, the
extension cut off. A recursion runs one sample after another; here each pass is cut into blocks of ``block``
samples so that everything becomes matrix products a graph runs batched (on every thread or a GPU):

* inside a block, the zero-state response is the lower-triangular Toeplitz matrix of the impulse response
  (``inner``);
* what a block leaves for the later ones is a state of ``order`` numbers (``to_state``), carried across blocks by
  powers of the block transition (``carry``, block lower-triangular) and read out by ``from_state``;
* the start from ``lfilter_zi`` times the pass's first sample is a free response of the same state: one state per
  block (``start``), added to the states the blocks carry (no pass over the samples of its own).

The state is a balanced realization of the filter (built from its second-order sections, square-root balancing),
so every matrix is bounded by about 1 and float32 keeps the result within ~1e-6 of scipy's (float64, transfer
function form). Exactness is tested against ``filtfilt`` on real records (tests/test_input_stage.py).
"""
from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np

BALANCE_SAMPLES = 20000  # samples of the controllability/observability sequences (the slowest pole decays by then)


@dataclasses.dataclass(frozen=True)
class PassBlocks:
    """One causal pass of the filter over ``blocks`` × ``block`` samples, as matrices (float64)."""

    block: int
    blocks: int
    inner: np.ndarray  # (block, block) zero-state response inside a block
    to_state: np.ndarray  # (order, block) a block's input → the state it leaves
    carry: np.ndarray  # (blocks·order, blocks·order) block j's leftover states → the state entering block i > j
    from_state: np.ndarray  # (block, order) the entering state → the block's output
    start: np.ndarray  # (blocks, order) the state lfilter_zi puts at each block's entry (times the first sample)


def _cascade(sos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """A state-space realization (A, B, C, D) of second-order sections in series (each in transposed direct form)."""
    a_mat, b_vec, c_vec, d = np.zeros((0, 0)), np.zeros((0, 1)), np.zeros((1, 0)), 1.0
    for b0, b1, b2, _, a1, a2 in sos:
        k = a_mat.shape[0]
        grown = np.zeros((k + 2, k + 2))
        grown[:k, :k] = a_mat
        section_b = np.array([[b1 - a1 * b0], [b2 - a2 * b0]])
        grown[k:, :k] = section_b @ c_vec
        grown[k:, k:] = [[-a1, 1.0], [-a2, 0.0]]
        a_mat, b_vec = grown, np.vstack([b_vec, section_b * d])
        c_vec, d = np.hstack([b0 * c_vec, [[1.0, 0.0]]]), b0 * d
    return a_mat, b_vec, c_vec, d


def _balanced(sos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, B, C) of a balanced realization (square-root method on QR factors: no Gramian is squared)."""
    a_mat, b_vec, c_vec, _ = _cascade(sos)
    order = a_mat.shape[0]
    ctrl, obs = np.zeros((BALANCE_SAMPLES, order)), np.zeros((BALANCE_SAMPLES, order))
    x, c = b_vec[:, 0].copy(), c_vec[0].copy()
    for k in range(BALANCE_SAMPLES):
        ctrl[k], obs[k] = x, c
        x, c = a_mat @ x, c @ a_mat
    r_ctrl, r_obs = np.linalg.qr(ctrl, mode="r"), np.linalg.qr(obs, mode="r")
    u, s, vt = np.linalg.svd(r_obs @ r_ctrl.T)
    forward, inverse = r_ctrl.T @ vt.T / np.sqrt(s), (u / np.sqrt(s)).T @ r_obs
    return inverse @ a_mat @ forward, inverse @ b_vec, c_vec @ forward


def block_size(n: int, order: int) -> int:
    """The block length that minimises the products' work, n·block + (n·order/block)², rounded up to 8."""
    best = (2.0 * n * order * order) ** (1 / 3)
    return int(max(8, -(-int(best) // 8) * 8))


@lru_cache(maxsize=8)
def pass_blocks(order: int, low: float, high: float, fs: float, n: int) -> PassBlocks:
    """The matrices of one pass of the Butterworth band-pass (``order``, ``low``–``high`` Hz at ``fs``) over ``n``
    samples."""
    from scipy import signal as sps

    b, a = sps.butter(order, [low, high], btype="bandpass", fs=fs)
    sos = sps.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    a_mat, b_vec, c_vec = _balanced(sos)
    states = a_mat.shape[0]
    block = block_size(n, states)
    blocks = -(-n // block)
    impulse = sps.lfilter(b, a, np.eye(1, block)[0])
    inner = np.tril(impulse[np.subtract.outer(np.arange(block), np.arange(block)).clip(0)])
    powers = [np.eye(states)]
    for _ in range(block):
        powers.append(a_mat @ powers[-1])
    to_state = np.stack([powers[block - 1 - t] @ b_vec[:, 0] for t in range(block)], axis=1)
    from_state = np.stack([c_vec[0] @ powers[t] for t in range(block)])
    step, jumps = powers[block], [np.eye(states)]
    for _ in range(blocks):
        jumps.append(step @ jumps[-1])
    carry = np.zeros((blocks * states, blocks * states))
    for i in range(blocks):
        for j in range(i):
            carry[i * states:(i + 1) * states, j * states:(j + 1) * states] = jumps[i - 1 - j]
    start = _start_states(sps.lfilter(b, a, np.zeros(blocks * block), zi=sps.lfilter_zi(b, a))[0], a_mat, c_vec,
                          jumps[:blocks])
    return PassBlocks(block, blocks, inner, to_state, carry, from_state, start)


def _start_states(response: np.ndarray, a_mat: np.ndarray, c_vec: np.ndarray, jumps: list) -> np.ndarray:
    """The state z0 whose free response C·A^t·z0 is ``response`` (lfilter's from ``lfilter_zi``: a free response
    of the same filter, so z0 exists; least squares over every sample), carried to each block's entry."""
    observed = np.zeros((len(response), a_mat.shape[0]))
    row = c_vec[0].copy()
    for t in range(len(response)):
        observed[t], row = row, row @ a_mat
    z0 = np.linalg.lstsq(observed, response, rcond=None)[0]
    return np.stack([jump @ z0 for jump in jumps])


def padlen(order: int) -> int:
    """scipy filtfilt's default odd extension for a band-pass of ``order``: 3 · (2·order + 1) samples."""
    return 3 * (2 * order + 1)
