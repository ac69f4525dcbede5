"""Plate text normalisation, pure: the text as a camera read it or a user typed it, to a
canonical form, a matching key and the region (a Thai province) split off.

- ``plate_norm``: upper-case Latin letters, ASCII digits (Thai digits U+0E50-U+0E59 mapped) and Thai
  consonants, with everything else (spaces, dashes, dots, the province) dropped:
  "1กข 1234 กรุงเทพมหานคร" -> "1กข1234", "ab-123.cd" -> "AB123CD".
- ``plate_key``: the norm with the characters readers and people confuse folded to one, so a
  search finds a plate however it was typed. The folds (and only these):
  O -> 0, Q -> 0, I -> 1 (registries avoid O, Q and I on plates for exactly this confusion,
  so folding them merges misreads, not real plates); the obsolete Thai letters ฃ -> ข and
  ฅ -> ค (never issued on plates; readers emit them for the live ones). Confusions between
  letters that plates do use (B/8, S/5, Z/2, G/6, D/0) are not folded: they would merge
  distinct plates; a fuzzy search (edit distance 1) finds them instead.
- ``region``: the Thai name of a province found in the text (Thai, or an English spelling as
  whole trailing words), removed from the plate. English names of five letters or fewer
  (Nan, Tak, Yala, ...) count only beside a Thai plate: a Latin plate "123 NAN" keeps its
  letters.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from fleetcore.plates.provinces import PROVINCES, THAI_ALIASES

_THAI_DIGITS = str.maketrans("๐๑๒๓๔๕๖๗๘๙", "0123456789")
_FOLD = str.maketrans({"O": "0", "Q": "0", "I": "1", "ฃ": "ข", "ฅ": "ค"})
_KEPT = re.compile(r"[A-Z0-9\u0e01-\u0e2e]")  # Latin, digits, Thai consonants ก-ฮ
_THAI_LETTER = re.compile(r"[\u0e01-\u0e2e]")
_WORDS = re.compile(r"[\s,;/()\[\]]+")
_SHORT_ENGLISH = 5  # English names this short count only beside a Thai plate

# Thai names, longest first (a name inside a longer one must not win).
# NFKC as the text is: it splits SARA AM (ำ) in two, as in กำแพงเพชร.
_THAI_NAMES: tuple[tuple[str, str], ...] = tuple(
    sorted(
        [
            (unicodedata.normalize("NFKC", spelled), thai)
            for spelled, thai in [(t, t) for t, _ in PROVINCES] + list(THAI_ALIASES.items())
        ],
        key=lambda pair: -len(pair[0]),
    )
)
_ENGLISH: dict[str, str] = {
    "".join(spelling.split()).casefold(): thai
    for thai, spellings in PROVINCES
    for spelling in spellings
}
_MAX_ENGLISH_WORDS = max(len(s.split()) for _, spellings in PROVINCES for s in spellings)


@dataclass(frozen=True, slots=True)
class Normalized:
    """A plate's canonical form, matching key and region (a province's Thai name)."""

    plate_norm: str
    plate_key: str
    region: str | None


def _clean(text: str) -> str:
    # NFKC: full-width Latin and digits (as an IME types them) become ASCII.
    return unicodedata.normalize("NFKC", text).translate(_THAI_DIGITS)


def _kept(text: str) -> str:
    return "".join(_KEPT.findall(text.upper()))


def _english_region(text: str) -> tuple[str, str | None]:
    """Whole trailing words that spell a province in English, split off."""
    words = [w for w in _WORDS.split(text) if w]
    for count in range(min(_MAX_ENGLISH_WORDS, len(words) - 1), 0, -1):
        spelled = "".join(words[-count:]).casefold()
        thai = _ENGLISH.get(spelled)
        if thai is None:
            continue
        rest = " ".join(words[:-count])
        if not _kept(rest):
            continue
        if len(spelled) <= _SHORT_ENGLISH and not _THAI_LETTER.search(rest):
            continue
        return rest, thai
    return text, None


def _thai_region(text: str) -> tuple[str, str | None]:
    """The first (longest) Thai province name in the text, split off."""
    squeezed = "".join(text.split())
    for name, thai in _THAI_NAMES:
        at = squeezed.find(name)
        if at < 0:
            continue
        rest = squeezed[:at] + squeezed[at + len(name) :]
        if _kept(rest):  # a province alone is no plate: keep it as the text
            return rest, thai
    return text, None


def province(text: str) -> str | None:
    """The Thai name of the province `text` names (Thai or English), or None."""
    cleaned = "".join(_clean(text).split())
    for name, thai in _THAI_NAMES:
        if cleaned == name:
            return thai
    return _ENGLISH.get(cleaned.casefold())


def fold(plate_norm: str) -> str:
    """The matching key of a normalised plate (see the module docstring for the folds)."""
    return plate_norm.translate(_FOLD)


def normalize(text: str) -> Normalized:
    """The canonical form, key and region of a plate as read or typed."""
    cleaned = _clean(text)
    rest, region = _thai_region(cleaned)
    if region is None:
        rest, region = _english_region(cleaned)
    norm = _kept(rest)
    return Normalized(plate_norm=norm, plate_key=fold(norm), region=region)


def neighbourhood(key: str) -> set[str]:
    """The key and the key with each one character deleted (SymSpell, distance 1)."""
    return {key} | {key[:i] + key[i + 1 :] for i in range(len(key))}


def distance(a: str, b: str, limit: int = 1) -> int:
    """Levenshtein distance of a and b, or limit + 1 once it is known to exceed limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        if min(current) > limit:
            return limit + 1
        previous = current
    return min(previous[-1], limit + 1)
