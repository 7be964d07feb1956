"""Approximate matching (``~=``): slapd's word-by-word Metaphone comparison.

Rules for this module:
- What matches is what slapd's ``directoryStringApproxMatch`` / ``IA5StringApproxMatch`` match
  (the rules slapd gives to attributes whose equality rule is caseIgnore, caseExact,
  caseIgnoreIA5 or caseExactIA5; other attributes compare ``~=`` with their equality rule).
  Both strings are reduced to ASCII (compatibility decomposition, every non-ASCII code point
  dropped: ``Müller`` -> ``Muller``, ``ß`` vanishes); the stored value is split into words at
  white space, the assertion at spaces; each word is reduced to a Metaphone code of at most 4
  letters. The assertion matches when each of its words has the code of one of the value's
  words, in the same order (each assertion word after the previous one's match), and it has at
  least one word.
- A word's code is read up to its first word break (a digit, punctuation, white space or a
  non-ASCII character: ``O'Brien`` codes as ``O``, ``3rd`` as the empty code) from its
  letters, upper-cased. The Metaphone variant is the one in slapd (Lawrence Philips' rules as
  published by Gary A. Parker, University of Michigan changes), with its quirks kept so that
  the same filters find the same entries: a ``B`` counts only as the last letter (and not after
  ``M``), the letter after an inner ``X`` is skipped (``X`` gives ``KS``), ``TH`` is ``0``.
- ``approx_keys`` gives the codes an index would store for a value (one per word, non-empty
  ones only), the keys an assertion needs being ``approx_keys`` of the assertion: every match
  has all of them.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["approx_keys", "approx_match", "assertion_codes", "codes_match", "metaphone"]

MAX_CODE = 4
_MAX_LETTERS = 31  # slapd copies at most 31 letters of a word
_VOWEL = frozenset("AEIOU")
_SAME = frozenset("FJLMNR")  # letters that code as themselves
_VARSON = frozenset("CGPST")
_FRONTV = frozenset("EIY")
_NOGHF = frozenset("BDH")
_PUNCT = frozenset(chr(c) for c in range(33, 127) if not chr(c).isalnum())
_SPACES = frozenset(" \t\n\v\f\r")
_WHITE = re.compile(r"[ \t\n\v\f\r]+")


def _breaks(ch: str) -> bool:
    return ord(ch) > 127 or ch in _SPACES or ch in _PUNCT or ch.isdigit()


def _letters(word: str) -> str:
    out: list[str] = []
    for ch in word:
        if _breaks(ch) or len(out) >= _MAX_LETTERS:
            break
        if ch.isalpha():
            out.append(ch.upper())
    return "".join(out)


def metaphone(word: str) -> str:
    """The Metaphone code (at most 4 letters, maybe empty) of the word ``word`` starts with."""
    letters = _letters(word)
    if not letters:
        return ""
    # four NULs before and after, so that looking around never leaves the buffer
    buf = ["\0"] * 4 + list(letters) + ["\0"] * 4
    end = 4 + len(letters)  # index of the first NUL after the word
    n = 4
    first, second = buf[n], buf[n + 1]
    if first in "PKG" and second == "N":  # PN, KN, GN -> N
        buf[n] = "\0"
        n += 1
    elif first == "A" and second == "E":  # AE -> E
        buf[n] = "\0"
        n += 1
    elif first == "W" and second == "R":  # WR -> R
        buf[n] = "\0"
        n += 1
    elif first == "W" and second == "H":  # WH -> W
        buf[n + 1] = "W"
        buf[n] = "\0"
        n += 1
    elif first == "X":  # X -> S
        buf[n] = "S"
    start = n
    code: list[str] = []
    ks = False
    while n <= end and len(code) < MAX_CODE:
        cur, prev = buf[n], buf[n - 1]
        if ks:
            ks = False
            code.append("S")
        elif prev == cur and cur != "C":
            pass  # a doubled letter counts once (but CC)
        elif cur in _SAME or (n == start and cur in _VOWEL):
            code.append(cur)
        else:
            _consonant(buf, n, start, end, code)
            if cur == "X" and n != start:
                ks = True
        n += 1
    return "".join(code)


def _consonant(buf: list[str], n: int, start: int, end: int, code: list[str]) -> None:
    cur, prev, nxt, nxt2 = buf[n], buf[n - 1], buf[n + 1], buf[n + 2]
    if cur == "B":
        if n == end - 1 and prev != "M":
            code.append("B")
    elif cur == "C":
        if prev != "S" or nxt not in _FRONTV:
            if nxt == "I" and nxt2 == "A":
                code.append("X")
            elif nxt in _FRONTV:
                code.append("S")
            elif nxt == "H":
                hard = (n == start and nxt2 not in _VOWEL) or prev == "S"
                code.append("K" if hard else "X")
            else:
                code.append("K")
    elif cur == "D":
        code.append("J" if nxt == "G" and nxt2 in _FRONTV else "T")
    elif cur == "G":
        if ((nxt != "J" or nxt2 in _VOWEL)
                and (nxt != "N" or (n + 1 < end and (nxt2 != "E" or buf[n + 3] != "D")))
                and (prev != "D" or nxt not in _FRONTV)):
            code.append("G" if nxt in _FRONTV and nxt2 != "G" else "K")
        elif nxt == "H" and buf[n - 3] not in _NOGHF and buf[n - 4] != "H":
            code.append("F")
    elif cur == "H":
        if prev not in _VARSON and (prev not in _VOWEL or nxt in _VOWEL):
            code.append("H")
    elif cur == "K":
        if prev != "C":
            code.append("K")
    elif cur == "P":
        code.append("F" if nxt == "H" else "P")
    elif cur == "Q":
        code.append("K")
    elif cur == "S":
        code.append("X" if nxt == "H" or (nxt == "I" and nxt2 in ("O", "A")) else "S")
    elif cur == "T":
        if nxt == "I" and nxt2 in ("O", "A"):
            code.append("X")
        elif nxt == "H":
            code.append("0")
        elif nxt != "C" or nxt2 != "H":
            code.append("T")
    elif cur == "V":
        code.append("F")
    elif cur in "WY":
        if nxt in _VOWEL:
            code.append(cur)
    elif cur == "X":
        code.append("S" if n == start else "K")
    elif cur == "Z":
        code.append("S")


def _ascii(value: bytes) -> str | None:
    """The value as slapd's approximate normalisation sees it: compatibility-decomposed, every
    non-ASCII code point dropped; None for a value that is not UTF-8."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.isascii():
        return text
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if ord(ch) < 128)


@lru_cache(maxsize=65536)
def _value_codes(value: bytes) -> tuple[str, ...] | None:
    """The codes of the words of a stored value (None: not UTF-8); cached, as the same values
    come back search after search (and surnames repeat)."""
    text = _ascii(value)
    if text is None:
        return None
    return tuple(metaphone(word) for word in _WHITE.split(text.strip()) if word)


def assertion_codes(assertion: bytes) -> tuple[str, ...] | None:
    """The codes of the words of an assertion, worked out once per filter (None: never
    matches: not UTF-8, or no word)."""
    wanted = _ascii(assertion)
    if wanted is None:
        return None
    codes = tuple(metaphone(word) for word in wanted.split(" ") if word)
    return codes or None


def codes_match(value: bytes, wanted: tuple[str, ...]) -> bool:
    """Does ``value`` match an assertion whose codes (``assertion_codes``) are ``wanted``?"""
    codes = _value_codes(value)
    if codes is None:
        return False
    after = 0
    for code in wanted:
        try:
            after = codes.index(code, after) + 1
        except ValueError:
            return False
    return True


def approx_match(value: bytes, assertion: bytes) -> bool:
    """Does ``value`` approximately match ``assertion`` (see the module rules)?"""
    wanted = assertion_codes(assertion)
    return wanted is not None and codes_match(value, wanted)


def approx_keys(value: bytes) -> set[str]:
    """The non-empty codes of the words of ``value`` (what an approximate index stores)."""
    return {c for c in _value_codes(value) or () if c}
