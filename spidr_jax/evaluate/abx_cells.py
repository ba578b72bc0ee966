"""The cells of a ZeroSpeech ABX task: which sets of tokens play A, B and X, and how cell scores are averaged.

Tokens are grouped into *sets* that share their phone, speaker and (within context) their (previous, next) phone
context. A *cell* is a triple of sets (A, B, X): A and X share the phone, B has another; all three share the
context (within context). Within speaker, the three share the speaker and X is A itself (a token is never its own
X, so A needs two tokens). Across speaker, A and B share a speaker and X has another one.

The error of a cell is the fraction of its triplets (a, b, x) where x is closer to b than to a, ties counting 1/2.
Cell errors are averaged over contexts (and, across speaker, over the X speakers with them), then over speakers,
then over (A phone, B phone) pairs; this is the grouping of fastabx's ``zerospeech_abx``, which reproduces the
ZeroSpeech 2021 / Libri-Light ABX.

Subsampling, as ZeroSpeech does it: every set keeps at most ``max_size_group`` tokens (the same ones in every cell
where it appears), and across speaker every (A, B) pair keeps at most ``max_x_across`` X speakers; both drawn from
a seeded generator. The draws are this module's own, so with subsampling the score differs slightly from another
implementation's with the same seed; without (``None``), it is exactly the same task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from spidr_jax.errors import UsageError
from spidr_jax.evaluate.abx_items import ItemTokens

__all__ = ["AbxCells", "build_cells", "collapse", "pairs_within_groups"]

Mode = Literal["within", "across"]


@dataclass(frozen=True)
class AbxCells:
    """Sets of tokens and the cells made of them.

    ``members[offsets[s]:offsets[s + 1]]`` are the tokens of set ``s`` (after subsampling); ``cell_a``, ``cell_b``,
    ``cell_x`` are set ids; ``symmetric`` means X is A (within speaker).
    """

    speaker: Mode
    context: Mode
    offsets: np.ndarray
    members: np.ndarray
    set_phone: np.ndarray
    set_context: np.ndarray
    set_speaker: np.ndarray
    cell_a: np.ndarray
    cell_b: np.ndarray
    cell_x: np.ndarray

    @property
    def symmetric(self) -> bool:
        """Whether X is A in every cell (within speaker)."""
        return self.speaker == "within"

    @property
    def sizes(self) -> np.ndarray:
        """Tokens per set."""
        return np.diff(self.offsets)

    def tokens_of(self, set_id: int) -> np.ndarray:
        """The tokens of one set."""
        return self.members[self.offsets[set_id] : self.offsets[set_id + 1]]

    def triplets(self) -> np.ndarray:
        """Triplets per cell: |A| |B| |X|, less the |A| where X is A."""
        sizes = self.sizes
        na, nb, nx = sizes[self.cell_a], sizes[self.cell_b], sizes[self.cell_x]
        return na * nb * (na - 1 if self.symmetric else nx)


def pairs_within_groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs ``(i, j)``, ``i != j``, of positions with the same label; ``labels`` sorted."""
    n = len(labels)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    counts = np.diff(np.r_[starts, n])
    group = np.repeat(np.arange(len(starts)), counts)
    repeats = counts[group]  # each position pairs with every position of its group
    first = np.repeat(np.arange(n), repeats)
    position_in_run = np.arange(repeats.sum()) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    second = starts[group][first] + position_in_run
    keep = first != second
    return first[keep], second[keep]


def _sets(tokens: ItemTokens, *, use_context: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(set key columns (S, 3): phone, context, speaker; set of each token; token order grouped by set)."""
    context = tokens.context if use_context else np.zeros_like(tokens.context)
    keys = np.stack([tokens.phone, context, tokens.speaker], axis=1)
    unique, set_of_token = np.unique(keys, axis=0, return_inverse=True)
    return unique, set_of_token.ravel(), np.argsort(set_of_token.ravel(), kind="stable")


def _subsample_sets(
    set_of_token: np.ndarray, order: np.ndarray, num_sets: int, max_size: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, members): each set's tokens in file order, at most ``max_size`` of them drawn at random."""
    counts = np.bincount(set_of_token, minlength=num_sets)
    offsets = np.r_[0, np.cumsum(counts)]
    if max_size is None or counts.max() <= max_size:
        return offsets, order
    kept = []
    for s in range(num_sets):
        members = order[offsets[s] : offsets[s + 1]]
        if len(members) > max_size:
            members = np.sort(rng.choice(members, size=max_size, replace=False))
        kept.append(members)
    sizes = np.asarray([len(m) for m in kept])
    return np.r_[0, np.cumsum(sizes)], np.concatenate(kept)


def _group_labels(columns: list[np.ndarray]) -> np.ndarray:
    """One integer label per row for the combination of the given (one or more) columns."""
    return np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)[1].ravel()


def _pairs_by(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ordered pairs of distinct sets sharing a label, as set ids."""
    order = np.argsort(labels, kind="stable")
    first, second = pairs_within_groups(labels[order])
    return order[first], order[second]


def _choose_x(
    pair_a: np.ndarray, pair_b: np.ndarray, x_of_a: tuple[np.ndarray, np.ndarray], limit: int | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Cells (A, B, X) of every (A, B) pair with each candidate X of A, at most ``limit`` per pair, at random."""
    a_sets, x_sets = x_of_a  # all (A, X) candidates, sorted by A
    starts = np.searchsorted(a_sets, pair_a, side="left")
    counts = np.searchsorted(a_sets, pair_a, side="right") - starts
    pair = np.repeat(np.arange(len(pair_a)), counts)
    candidate = np.repeat(starts, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    if limit is not None and counts.max(initial=0) > limit:
        draw = rng.random(len(pair))
        order = np.lexsort((draw, pair))  # within each pair, a random order of its candidates
        rank = np.empty(len(pair), np.int64)
        rank[order] = np.arange(len(pair)) - np.repeat(np.cumsum(counts) - counts, counts)
        keep = rank < limit
        pair, candidate = pair[keep], candidate[keep]
    return pair_a[pair], pair_b[pair], x_sets[candidate]


def build_cells(
    tokens: ItemTokens,
    *,
    speaker: Mode = "within",
    context: Mode = "within",
    max_size_group: int | None = 10,
    max_x_across: int | None = 5,
    seed: int = 0,
) -> AbxCells:
    """Sets and cells of the ABX task on ``tokens``, subsampled as in ZeroSpeech (``None`` keeps everything).

    :param speaker: ``"within"``: A, B, X of one speaker; ``"across"``: X of another speaker than A and B.
    :param context: ``"within"``: A, B, X share the (previous, next) phones; ``"any"`` ignores them.
    """
    if speaker not in ("within", "across"):
        raise UsageError(f"speaker must be 'within' or 'across', got {speaker!r}")
    if context not in ("within", "any"):
        raise UsageError(f"context must be 'within' or 'any', got {context!r}")
    if max_size_group is not None and max_size_group < 2:
        raise UsageError(f"max_size_group must be at least 2 (or None for no limit), got {max_size_group}")
    if max_x_across is not None and max_x_across < 1:
        raise UsageError(f"max_x_across must be at least 1 (or None for no limit), got {max_x_across}")
    rng = np.random.default_rng(seed)
    keys, set_of_token, order = _sets(tokens, use_context=context == "within")
    offsets, members = _subsample_sets(set_of_token, order, len(keys), max_size_group, rng)
    phone, ctx, spk = keys[:, 0], keys[:, 1] if context == "within" else np.full(len(keys), -1), keys[:, 2]
    by_context = [ctx] if context == "within" else []
    # (A, B): another phone, same context (within context) and speaker.
    pair_a, pair_b = _pairs_by(_group_labels([*by_context, spk]))
    if speaker == "within":
        keep = np.diff(offsets)[pair_a] >= 2  # a token is not its own X: A needs two
        cell_a, cell_b = pair_a[keep], pair_b[keep]
        cell_x = cell_a
    else:
        # X: the phone and context of A, another speaker.
        same_phone = _group_labels([phone, *by_context])
        x_a, x_x = _pairs_by(same_phone)
        by_a = np.argsort(x_a, kind="stable")
        cell_a, cell_b, cell_x = _choose_x(pair_a, pair_b, (x_a[by_a], x_x[by_a]), max_x_across, rng)
    order_cells = np.lexsort((cell_x, cell_b, cell_a))
    return AbxCells(
        speaker=speaker,
        context=context,
        offsets=offsets,
        members=members,
        set_phone=phone,
        set_context=ctx,
        set_speaker=spk,
        cell_a=cell_a[order_cells],
        cell_b=cell_b[order_cells],
        cell_x=cell_x[order_cells],
    )


def _mean_by(keys: list[np.ndarray], values: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Mean of ``values`` per distinct row of ``keys``; returns (the distinct keys, their means)."""
    unique, inverse = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)
    inverse = inverse.ravel()
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    return [unique[:, i] for i in range(unique.shape[1])], means


def collapse(cells: AbxCells, errors: np.ndarray) -> float:
    """The ABX error: cell errors averaged over contexts, then speakers, then (A phone, B phone) pairs.

    Across speaker, the X speaker is averaged with the context (at the first level, or, ignoring the context,
    with the speaker): the rows that differ only in their X speaker are separate cells of equal weight.
    """
    phone_a, phone_b = cells.set_phone[cells.cell_a], cells.set_phone[cells.cell_b]
    speaker = cells.set_speaker[cells.cell_a]
    keys, values = [phone_a, phone_b, speaker], np.asarray(errors, np.float64)
    if cells.context == "within" or cells.speaker == "within":
        keys, values = _mean_by(keys, values)  # over contexts (and X speakers): per (A phone, B phone, speaker)
    keys, values = _mean_by(keys[:2], values)  # over speakers: per (A phone, B phone)
    return float(values.mean())
