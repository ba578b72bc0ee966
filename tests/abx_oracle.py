"""A slow, plain implementation of the ZeroSpeech phoneme ABX, written from its definition, to test against.

Every step is a loop that reads like the definition: tokens from the item file (frames whose centre lies in
[onset, offset]), the DTW with its backtracked path, every (A, B, X) triplet of every cell, then averages over
contexts (with the X speakers, across speaker), speakers and phone pairs. No subsampling.
"""

from __future__ import annotations

import math
from collections import defaultdict
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import numpy as np


def read_tokens(item: Path, features: dict, step: Decimal = Decimal("0.02")) -> list[dict]:
    lines = Path(item).read_text(encoding="utf-8").splitlines()
    names = lines[0].split()
    tokens = []
    for line in lines[1:]:
        row = dict(zip(names, line.split(), strict=True))
        first = int((Decimal(row["onset"]) / step - Decimal("0.5")).to_integral_value(ROUND_CEILING))
        last = int((Decimal(row["offset"]) / step - Decimal("0.5")).to_integral_value(ROUND_FLOOR))
        frames = np.asarray(features[row["#file"]])[first : last + 1]
        assert len(frames) > 0
        tokens.append({"phone": row["#phone"], "context": (row["prev-phone"], row["next-phone"]),
                       "speaker": row["speaker"], "frames": frames})  # fmt: skip
    return tokens


def frame_distance(u: np.ndarray, v: np.ndarray) -> float:
    if np.ndim(u) == 0:  # units: 0 if equal, 1 otherwise
        return float(u != v)
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    cosine = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
    return math.acos(min(1.0, max(-1.0, cosine))) / math.pi


def dtw(x: np.ndarray, y: np.ndarray) -> float:
    """Accumulated cost at the last cell over the number of cells on the backtracked path."""
    n, m = len(x), len(y)
    cost = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            d = frame_distance(x[i], y[j])
            if i == 0 and j == 0:
                cost[i, j] = d
            elif i == 0:
                cost[i, j] = d + cost[i, j - 1]
            elif j == 0:
                cost[i, j] = d + cost[i - 1, j]
            else:
                cost[i, j] = d + min(cost[i - 1, j], cost[i - 1, j - 1], cost[i, j - 1])
    i, j, path = n - 1, m - 1, 1
    while i > 0 and j > 0:
        if cost[i - 1, j - 1] <= cost[i, j - 1] and cost[i - 1, j - 1] <= cost[i - 1, j]:
            i, j = i - 1, j - 1
        elif cost[i, j - 1] <= cost[i - 1, j]:
            j -= 1
        else:
            i -= 1
        path += 1
    path += i + j  # straight along the first row or column
    return cost[n - 1, m - 1] / path


def cell_error(a_set: list[int], b_set: list[int], x_set: list[int], tokens: list[dict]) -> float:
    wrong, total = 0.0, 0
    for x in x_set:
        for a in a_set:
            if a == x:
                continue
            for b in b_set:
                d_a = dtw(tokens[x]["frames"], tokens[a]["frames"])
                d_b = dtw(tokens[x]["frames"], tokens[b]["frames"])
                wrong += 1.0 if d_a > d_b else 0.5 if d_a == d_b else 0.0
                total += 1
    return wrong / total


def abx(item: Path, features: dict, speaker: str, context: str) -> float:
    tokens = read_tokens(item, features)
    sets = defaultdict(list)  # (phone, context or None, speaker) -> tokens
    for index, token in enumerate(tokens):
        sets[token["phone"], token["context"] if context == "within" else None, token["speaker"]].append(index)
    # errors[(phone A, phone B)][speaker of A and B] -> cell errors (one per context, and per X speaker across)
    errors = defaultdict(lambda: defaultdict(list))
    for (phone_a, ctx, spk), a_set in sets.items():
        for (phone_b, ctx_b, spk_b), b_set in sets.items():
            if phone_b == phone_a or ctx_b != ctx or spk_b != spk:
                continue
            if speaker == "within":
                if len(a_set) >= 2:
                    errors[phone_a, phone_b][spk].append(cell_error(a_set, b_set, a_set, tokens))
                continue
            for (phone_x, ctx_x, spk_x), x_set in sets.items():
                if phone_x == phone_a and ctx_x == ctx and spk_x != spk:
                    errors[phone_a, phone_b][spk].append(cell_error(a_set, b_set, x_set, tokens))
    per_pair = []
    for by_speaker in errors.values():
        if speaker == "across" and context == "any":  # fastabx: one mean over (speaker, X speaker) cells
            per_pair.append(np.mean([e for cells in by_speaker.values() for e in cells]))
        else:  # mean over contexts (and X speakers) per speaker, then over speakers
            per_pair.append(np.mean([np.mean(cells) for cells in by_speaker.values()]))
    return float(np.mean(per_pair))
