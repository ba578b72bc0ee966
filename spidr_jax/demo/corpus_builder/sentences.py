"""The sentences of the demo corpus: a small seeded template grammar.

`make_sentences(count, rng)` draws distinct sentences from random templates filled with random words, so the same
seed gives the same sentences. The word lists are chosen to cover the phone inventory (ZH in "treasure", OY in
"coin", DX in US "water", ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from spidr_jax.errors import InputError

_T = TypeVar("_T")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _verbs(text: str) -> tuple[tuple[str, str], ...]:
    """(base, past) pairs from "base/past base/past ..."."""
    return tuple((pair.split("/")[0], pair.split("/")[1]) for pair in text.split())


_NAMES = _words(
    "John Mary Peter Susan Thomas Lucy George Rachel Oliver Emma Joseph Judy Charles Zoe Vincent Shelley Howard "
    "Joyce Ethan Beth Arthur Nora Hugo Kate Martin Julia Victor Agnes Roger Ivy Walter Fiona Betty"
)
_ANIMATE = _words(
    "cat dog boy girl king queen farmer doctor teacher sailor child baker pilot singer judge nurse fox horse bird "
    "goat mouse sheep frog bear tiger duck robot waiter father mother neighbour soldier player thief owl monkey"
)
_THINGS = _words(
    "book coin ring chair table window bottle letter jacket ladder basket bridge wagon kettle pillow candle mirror "
    "treasure violin pencil orange cookie blanket rope shoe watch clock key map bag cup box hat drum boat ship car "
    "truck train wheel feather toy fork knife spoon glove shovel puzzle jar cheese bread soup apple lemon cake "
    "paper photo radio garage engine thread television collage water butter"
)
_PLACES = _words(
    "kitchen garden village market river station forest beach harbour valley church school museum hallway "
    "mountain castle office cellar bakery library island farm town park shop hotel theatre field house yard city"
)
_ADJECTIVES = _words(
    "red big small old young quiet noisy heavy thin thick happy angry lazy clever yellow purple shiny muddy smooth "
    "rough wooden golden broken ancient gentle hungry frozen beige sleepy tiny huge brave cheap fresh wet dry soft "
    "sharp warm cold dirty pretty strange bright dark loud round new casual unusual little"
)
_TRANSITIVE = _verbs(
    "find/found lose/lost fix/fixed wash/washed paint/painted carry/carried push/pushed pull/pulled drop/dropped "
    "open/opened close/closed watch/watched chase/chased catch/caught buy/bought sell/sold move/moved kick/kicked "
    "hide/hid take/took throw/threw grab/grabbed clean/cleaned borrow/borrowed drag/dragged touch/touched "
    "measure/measured enjoy/enjoyed share/shared change/changed check/checked bring/brought need/needed "
    "want/wanted see/saw keep/kept hold/held leave/left bite/bit use/used"
)
_INTRANSITIVE = _verbs(
    "sleep/slept laugh/laughed jump/jumped sing/sang shout/shouted wait/waited smile/smiled vanish/vanished "
    "arrive/arrived escape/escaped dance/danced whisper/whispered sneeze/sneezed yawn/yawned cough/coughed run/ran "
    "swim/swam fall/fell sit/sat work/worked play/played cry/cried rest/rested leave/left"
)
_ADVERBS = (
    *_words(
        "quickly slowly quietly loudly early today again yesterday twice gently happily usually often later casually"
    ),
    *("outside", "at noon", "at night", "on Thursday", "last June"),
)
_NUMBERS = _words("two three four five six seven eight nine ten twelve twenty thirty")
_PLURALS = {"child": "children", "mouse": "mice", "sheep": "sheep", "thief": "thieves", "knife": "knives"}

_TEMPLATES = (
    "The {adj} {animate} {ipast}.",
    "{name} {past} the {thing}.",
    "{name} {ipast} {adv}.",
    "The {animate} {ipast} {adv}.",
    "Did the {animate} {ibase}?",
    "Please {base} the {thing}.",
    "Where is the {thing}?",
    "{name} and {name2} {ipast}.",
    "The {thing} was {adj}.",
    "My {animate} {past} it.",
    "{number} {animates} {ipast}.",
    "{name} saw {a_adj} {animate}.",
    "Why did {name} {ibase}?",
    "{name}, {base} the {thing}.",
    "Yes, the {animate} {ipast}.",
    "Well, the {thing} is {adj}.",
    "Who {past} the {thing}?",
    "The {thing} is in the {place}.",
    "No, {name} {past} the {thing}.",
    "{name} {past} {number} {things}.",
    "Look at the {adj} {thing}!",
    "Our {animate} is {adj}.",
    "It was {a_adj} {thing}.",
)


def _plural(noun: str) -> str:
    if noun in _PLURALS:
        return _PLURALS[noun]
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _pick(rng: np.random.Generator, words: Sequence[_T]) -> _T:
    return words[int(rng.integers(len(words)))]


def make_sentence(rng: np.random.Generator) -> str:
    """One sentence from a random template, with random words."""
    template = _pick(rng, _TEMPLATES)
    name, name2 = (str(n) for n in rng.choice(_NAMES, size=2, replace=False))
    adj = _pick(rng, _ADJECTIVES)
    base, past = _pick(rng, _TRANSITIVE)
    ibase, ipast = _pick(rng, _INTRANSITIVE)
    animate = _pick(rng, _ANIMATE)
    sentence = template.format(
        name=name,
        name2=name2,
        adj=adj,
        a_adj=("an " if adj[0] in "aeiou" else "a ") + adj,
        base=base,
        past=past,
        ibase=ibase,
        ipast=ipast,
        thing=_pick(rng, _THINGS),
        things=_plural(_pick(rng, _THINGS)),
        animate=animate,
        animates=_plural(animate),
        place=_pick(rng, _PLACES),
        adv=_pick(rng, _ADVERBS),
        number=_pick(rng, _NUMBERS),
    )
    return sentence[0].upper() + sentence[1:]


def make_sentences(count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct sentences, in generation order."""
    seen: dict[str, None] = {}
    for _ in range(count * 100):
        seen.setdefault(make_sentence(rng))
        if len(seen) == count:
            return list(seen)
    raise InputError(f"the grammar produced only {len(seen)} distinct sentences; ask for fewer than {count}")
