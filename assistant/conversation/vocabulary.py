"""The served catalog's spoken vocabulary: Whisper biasing and the repair of misheard product words (#8).

Everything here is built from the catalog it serves, never from word lists naming one catalog's products:

* **kinds**: what the merchant calls its kinds of product: category path segments ("Hoodies & Sweatshirts" ->
  hoodies, sweatshirts), the style attribute values ("Pullover", "Leggings") and the head nouns that several product
  titles share ("... Yoga Pant", "... Backpack"), with the spoken aliases `assistant.search.query` knows ("hoody",
  "t shirt");
* **lines**: product-line names, the distinctive word(s) a title starts with ("Mona", "Karmen", "Sprite");
* **brands** and the **colours** the variants come in.

`CatalogVocabulary.prompt` is the text Whisper is prompted with (``initial_prompt``; faster-whisper's short-window
path feeds it as previous context, openai-whisper as its prompt): the kinds first, most stocked first, then brands
and product lines, within a token budget. A model that expects "Hoodies" decodes "black hoodie" where it heard
"black hold".

`CatalogVocabulary.repair` is the second line: given a transcript and Whisper's other beam hypotheses it

1. prefers a hypothesis that names a catalog kind, line or brand when the best one names none (and is within
   `NBEST_MARGIN` of its score), then
2. replaces the words that most likely are a misheard product word -- by spelling (rapidfuzz) and sound
   (metaphone, jellyfish) -- with the closest catalog term, when the request names no product word at all.

A repair never drops a constraint: only the misheard words change ("black hold under fifty" -> "black hoodie under
fifty"). Words Whisper was sure of (the same in every hypothesis) are repaired only at typo distance, so "do you
sell laptops" stays a question about laptops.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import jellyfish
from rapidfuzz import fuzz

from assistant.catalog.model import Catalog, Product
from assistant.conversation.spelling import TypoFixer
from assistant.search.query import (
    COLOR_SYNONYMS,
    NUMBER_WORDS,
    SPOKEN_CATEGORY_ALIASES,
    canonical_color,
    canonical_gender,
)

PROMPT_MAX_WORDS = 90  # ~150 Whisper tokens: well inside its 223-token previous-context window
PROMPT_MAX_LINES = 30  # product-line names in the prompt (on dev requests 30 beat none, 60 and all of them)
MAX_LINE_DF = 12  # a title word shared by more titles than this is not a product-line name
NBEST_MARGIN = 0.35  # a hypothesis naming a catalog term may lose this much mean log-probability to the best one
UNSURE_THRESHOLD = 0.62  # similarity to repair a word that Whisper's hypotheses disagree on
SURE_THRESHOLD = 0.86  # ... and one they all agree on (typo distance: "hoddie", "legins")
_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Function words, shopping talk and vague praise: never a misheard product word, a product's name or what
# defines it. English, not any catalog's words.
_COMMON = frozenset("""
a an the and or but of for to in on at by with from up down out over under about above below between into than i
me my mine you your yours we us our it its this that these those they them their he she his her one ones some
any is are was were be been am do does did have has had can could would should will shall may might must not no
yes please thanks thank hi hello hey ok okay so well just really very too also only even still again more most
less show find get give want need like looking look see tell buy order add put take got let lets what which who
how where when why much many cheap cheaper cheapest price prices cost costs dollar dollars bucks size sizes
colour color colours colors something anything thing things stuff item items product products kind kinds sort
type new nice good great best other another same different pair pairs set sell carry stock available there here
now today maybe actually um uh er hmm oh ah yeah yep nope sure right left first second third last next small
medium large extra x xs xl s m l men women mens womens woman man kids girls boys ladies unisex everything types
better sells selling carries stocks cute pretty cool comfy comfortable lovely awesome fancy simple basic plain
decent quality affordable expensive budget sale deal deals option options choice choices recommend suggest guys
folks store shop catalog range selection collection brand brands model models version style styles looks wear
wearing haha hah lol wow huh ooh yay ugh then instead meant mean means anyway though either rather else similar
comparable alike lookalike pricier bigger smaller longer shorter lighter warmer gift gifts present presents
offer offers someone somebody idea ideas perhaps probably kinda sorta alright fine great cool nice please love
i'm i've i'll i'd you're you've it's that's what's there's here's let's don't doesn't can't won't isn't aren't
spend spending afford money max tops pricey without old favourite favorite outfit outfits layer layers say says
said tell tells
""".split())
COMMON_WORDS = _COMMON  # everyday English of shopping talk: never a product's name on its own
_SHOPPING_CUES = re.compile(
    r"\b(?:show|find|looking|look|want|need|have|got|sell|carry|stock|buy|get|search|any|some|under|over|below|"
    r"less|cheap|size|dollars?|bucks)\b"
)


def plural(word: str) -> str:
    """English plural of a noun ("hoodie" -> hoodies, "watch" -> watches, "body" -> bodies)."""
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word if word.endswith("s") else word + "es"
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower().replace("’", "'"))


def singular_forms(word: str) -> list[str]:
    """The singular forms a plural may have ("hoodies" -> hoodie and hoody; "watches" -> watch)."""
    if len(word) > 4 and word.endswith("ies"):
        return [word[:-1], word[:-3] + "y"]
    if len(word) > 3 and re.search(r"(ss|sh|ch|x)es$", word):
        return [word[:-2]]
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        return [word[:-1]]
    return [word]


def _sound(word: str) -> str:
    return jellyfish.metaphone(word) if word else ""


@dataclass(frozen=True)
class Repair:
    """One misheard stretch of a transcript and the catalog term put in its place."""

    heard: str
    meant: str
    kind: str  # "kind", "line" or "brand"; "typo" for a typing slip of any word
    score: float
    source: str  # "n-best" (another beam hypothesis), "sound" (spelling/sound match) or "spelling" (a typing slip)


@dataclass(frozen=True)
class Understood:
    """A transcript after repair: the text the turn runs on and what changed."""

    text: str
    repairs: tuple[Repair, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.repairs)

    def shown_as(self) -> str | None:
        """What to tell the shopper was understood ("Showing hoodies."), or None when nothing was repaired."""
        repairs = [r for r in self.repairs if r.kind != "typo"]  # a typing slip corrected goes without saying
        if not repairs:
            return None
        kinds = [r.meant for r in repairs if r.kind == "kind"]
        if kinds:
            return "Showing " + " and ".join(kinds) + "."
        # A product line or brand is a name: said after "for", it is no product claim of its own.
        return "Showing results for " + " and ".join(r.meant for r in repairs) + "."


@dataclass
class CatalogVocabulary:
    """The catalog's spoken vocabulary (see the module docstring).

    Attributes:
        kinds: Kind words as spoken (lower case, singular and plural) -> the catalog's own word for the kind
            (plural, as a shopper hears it back: "hoodies").
        lines: Product-line name (lower case) -> the ids of the products in that line.
        line_names: Product-line name (lower case) -> as the catalog spells it ("Karmen").
        brands: Brand (lower case) -> as the catalog spells it.
        colours: The canonical colours the catalog's products come in.
        kind_counts: How many products each kind (its catalog word) covers; the prompt lists the biggest first.
    """

    kinds: dict[str, str]
    lines: dict[str, tuple[str, ...]]
    line_names: dict[str, str]
    brands: dict[str, str]
    colours: tuple[str, ...]
    kind_counts: dict[str, int] = field(default_factory=dict)
    max_prompt_words: int = PROMPT_MAX_WORDS
    words: frozenset[str] = frozenset()  # every word of the products' titles, categories, attributes, descriptions
    _terms: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        terms: dict[str, tuple[str, str]] = {}
        for spoken, word in self.kinds.items():
            terms.setdefault(spoken, (word, "kind"))
        for key, name in self.line_names.items():
            terms.setdefault(key, (name, "line"))
        for key, name in self.brands.items():
            terms.setdefault(key, (name, "brand"))
        self._terms = terms
        # Terms by their words' count (longest first), for matching spans of the same length.
        self._by_len: dict[int, list[str]] = {}
        for term in terms:
            self._by_len.setdefault(len(term.split()), []).append(term)
        self._sounds = {term: _sound(term.replace(" ", "")) for term in terms}
        # Orders fixed by the catalog, so that a prompt per decode (products on screen first) only reorders.
        self._kind_order = sorted(self.kind_counts, key=lambda k: (-self.kind_counts[k], k))
        self._line_order = sorted(self.line_names, key=lambda k: hashlib.md5(k.encode()).hexdigest())
        self._prompt = self._build_prompt()
        self._typos = TypoFixer(self.words | set(self._terms) | set(COLOR_SYNONYMS),
                                {w for t in self._terms for w in t.split()} | set(COLOR_SYNONYMS))

    # --- building ---------------------------------------------------------------------------------------------
    @classmethod
    def from_catalog(cls, catalog: Catalog) -> CatalogVocabulary:
        """The vocabulary of the catalog's shoppable products (and their variants' colours)."""
        products = catalog.parents()
        colours = {canonical_color(c) for p in catalog for c in p.colors()}
        return cls.from_products(products, colours=colours)

    @classmethod
    def from_products(cls, products: Iterable[Product], *, colours: Iterable[str] = ()) -> CatalogVocabulary:
        """Build from shoppable products; `colours` adds colours their variants come in."""
        products = list(products)
        kind_products: dict[str, set[str]] = {}  # a kind's singular key -> product ids
        kind_word: dict[str, str] = {}  # a kind's singular key -> the catalog's word for it (plural where it has one)

        def add_kind(word: str, pid: str, *, as_plural: bool = False) -> None:
            word = " ".join(_words(word))
            if (len(word) < 3 or not word.replace(" ", "").isalpha() or canonical_gender(word) is not None
                    or word in COLOR_SYNONYMS):
                return
            if as_plural and " " not in word:
                word = plural(word)
            key = singular_forms(word)[0] if word.endswith("s") and " " not in word else word
            kind_products.setdefault(key, set()).add(pid)
            if key not in kind_word or (word != key and kind_word[key] == key):
                kind_word[key] = word

        title_words: list[list[str]] = []
        for p in products:
            # The primary category path names what the product is ("Women/Tops/Hoodies & Sweatshirts"); other
            # paths are often collections or promotions ("Promotions/Women Sale"), not kinds.
            for segment in p.category.split("/"):
                for part in re.split(r"\s*(?:&|,|\band\b)\s*", segment):
                    if part.strip() and canonical_gender(part) is None:
                        add_kind(part, p.id)
            for value in p.attribute_values("style_general", "style"):
                add_kind(value, p.id)
            title_words.append(_words(p.title.replace("'s ", " ")))
        # Head nouns several titles share ("... Yoga Pant", "... Backpack") are kinds too (plural, as asked for).
        heads = Counter(ws[-1] for ws in title_words if len(ws) > 1 and not ws[-2].isdigit())
        for p, ws in zip(products, title_words, strict=True):
            if len(ws) > 1 and not ws[-2].isdigit() and heads[ws[-1]] >= 2:  # not "10 foot", "55 cm"
                add_kind(ws[-1], p.id, as_plural=True)
        kinds: dict[str, str] = {}
        for key, word in kind_word.items():
            forms = {word, key}
            if " " not in word:
                forms |= set(singular_forms(word)) | {plural(key)}
            for spoken in forms:
                kinds.setdefault(spoken, word)
        for term, aliases in SPOKEN_CATEGORY_ALIASES.items():
            target = next((kinds[f] for f in (term, plural(term)) if f in kinds), None)
            for alias in aliases if target else ():
                kinds.setdefault(alias, target)  # type: ignore[arg-type]
                kinds.setdefault(plural(alias), target)  # type: ignore[arg-type]
        # Product lines: the first distinctive word of each title (not a kind, colour, number or common word).
        df = Counter(w for ws in title_words for w in set(ws))
        first = Counter(ws[0] for ws in title_words if ws)
        lines: dict[str, list[str]] = {}
        line_names: dict[str, str] = {}
        for p, ws in zip(products, title_words, strict=True):
            for i, word in enumerate(ws):
                # A line name opens most of the titles it is in ("Sprite ..."); a word that mostly stands inside
                # titles ("... Yoga Pant") is a description, even where one title starts with it.
                if (word in kinds or word in _COMMON or word in COLOR_SYNONYMS or not word.isalpha() or len(word) < 3
                        or (i > 0 and df[word] > MAX_LINE_DF) or (i == 0 and 2 * first[word] < df[word])):
                    continue
                lines.setdefault(word, []).append(p.id)
                original = next((t for t in re.findall(r"[A-Za-z0-9']+", p.title) if t.lower() == word), word)
                line_names.setdefault(word, original)
                break
        brands = {" ".join(p.brand.lower().split()): p.brand for p in products if p.brand}
        colour_set = {canonical_color(c) for p in products for c in p.colors()} | set(colours)
        return cls(
            kinds=kinds,
            lines={k: tuple(v) for k, v in lines.items()},
            line_names=line_names,
            brands=brands,
            colours=tuple(sorted(colour_set)),
            kind_counts={kind_word[k]: len(v) for k, v in kind_products.items()},
            words=frozenset(w for p in products for text in (p.title, p.category, *p.categories, p.brand or "",
                                                             p.description or "", *map(str, p.attributes.values()))
                            for w in re.findall(r"[a-z]+", text.lower())),
        )

    def warm(self) -> CatalogVocabulary:
        """Load what typed-text repair needs (the spelling dictionaries) now rather than on the first message."""
        self._typos.warm()
        return self

    # --- biasing ----------------------------------------------------------------------------------------------
    @property
    def prompt(self) -> str:
        """The Whisper prompt with nothing on screen (see `prompt_for`)."""
        return self._prompt

    def prompt_for(self, shown: Sequence[str] = ()) -> str:
        """The Whisper prompt, 'We sell <kinds>. <brands> <product lines>', for these products on screen.

        Kinds come first, most stocked first, all of them within `PROMPT_MAX_WORDS`; then brands and at most
        `PROMPT_MAX_LINES` product-line names: those of the products on screen (`shown`, product ids) first -- the
        ones a shopper is likeliest to name next -- then the others in a fixed order that favours no letter of the
        alphabet. A longer list made Whisper worse (it starts to hear names everywhere); names left out are still
        repaired by sound (`repair`).
        """
        if not shown:
            return self._prompt
        return self._build_prompt(shown)

    def _build_prompt(self, shown: Sequence[str] = ()) -> str:
        kinds = self._kind_order
        on_screen = set(shown)
        line_order = [k for k in self._line_order if on_screen & set(self.lines.get(k, ()))] + \
            [k for k in self._line_order if not on_screen & set(self.lines.get(k, ()))]
        budget = self.max_prompt_words
        taken_kinds: list[str] = []
        for kind in kinds:
            if len(" ".join(taken_kinds + [kind]).split()) > budget * 2 // 3:
                break
            taken_kinds.append(kind)
        names = sorted(self.brands.values()) + [self.line_names[k] for k in line_order]
        used = len(" ".join(taken_kinds).split())
        taken_names: list[str] = []
        for name in names:
            if len(taken_names) >= PROMPT_MAX_LINES + len(self.brands) or used + len(name.split()) > budget:
                break
            taken_names.append(name)
            used += len(name.split())
        # Words separated by spaces, not commas: a comma list puts Whisper in list mode ("Exercise, Bands,"), and on
        # the dev requests it heard worse (WER 0.274 vs 0.251 clean, 0.424 vs 0.363 on the phone).
        parts = []
        if taken_kinds:
            parts.append("We sell " + " ".join(taken_kinds) + ".")
        if taken_names:
            parts.append(" ".join(taken_names))
        return " ".join(parts)

    @property
    def fingerprint(self) -> str:
        """Changes whenever the prompt or the repair terms change (a catalog reload rebuilds the vocabulary)."""
        blob = "\n".join([self.prompt, *sorted(self._terms)])
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    # --- repair -----------------------------------------------------------------------------------------------
    def terms_in(self, text: str) -> list[str]:
        """The catalog terms (kinds, lines, brands; lower case) that `text` names."""
        padded = " " + " ".join(_words(text)) + " "
        return [t for t in self._terms if f" {t} " in padded]

    def repair(self, text: str, alternatives: Sequence[tuple[str, float]] = (), score: float | None = None
               ) -> Understood:
        """Repair the misheard product words of one transcript (see the module docstring).

        Args:
            text: The transcript (Whisper's best hypothesis) or a typed message.
            alternatives: Whisper's other beam hypotheses with their mean log-probabilities, best first.
            score: The best hypothesis's mean log-probability (None: typed text, or unknown).

        Returns:
            The text to run the turn on, and the repairs made.
        """
        chosen, repairs = text, []
        if score is None and not alternatives:  # typed: typing slips first ("shwo me sprots bras in bleu")
            chosen, slips = self._typos.fix(text)
            for typed, fixed in slips:  # a catalog term is said back ("Showing hoodies"), other words silently
                term = self._terms.get(fixed)
                repairs.append(Repair(typed, term[0] if term else fixed, term[1] if term else "typo", 1.0,
                                      "spelling"))
        asked = _plural_nouns(chosen)  # "running shoes", "water bottles": heard whole, asked for; never swapped
        if alternatives and not self.terms_in(text) and score is not None:
            for alt, alt_score in alternatives:
                replaced = set(_words(text)) - set(_words(alt))
                if self.terms_in(alt) and score - alt_score <= NBEST_MARGIN and _same_constraints(text, alt) \
                        and _keeps(asked, alt) and not replaced <= _COMMON:  # "in a medium" is no "Ina medium"
                    found = self.terms_in(alt)
                    meant = self._terms[max(found, key=len)]
                    repairs.append(Repair(_differing(text, alt), meant[0], meant[1], round(score - alt_score, 3),
                                          "n-best"))
                    chosen = alt
                    break
        if score is not None and not [r for r in repairs if r.kind != "typo"] and not self.terms_in(chosen) \
                and _SHOPPING_CUES.search(chosen.lower()):
            # Typed text (no score) is never misheard: only typos ("hoddies") are repaired, so "yellow rain
            # boots" stays rain boots and a brand the catalog lacks stays that brand. In a transcript, the words
            # Whisper was unsure of may be sounds-alike.
            unsure = _unstable_words(chosen, [a for a, _ in alternatives]) | _after_colour(chosen)
            by_sound = self._repair_by_sound(chosen, unsure, asked)
            if by_sound is not None:
                chosen, repair = by_sound
                repairs.append(repair)
        return Understood(chosen, tuple(repairs))

    def _repair_by_sound(self, text: str, unsure: set[str], asked: AbstractSet[str] = frozenset()
                         ) -> tuple[str, Repair] | None:
        """Replace the one or two words that best match a catalog term by spelling and sound, if close enough."""
        tokens = list(re.finditer(r"[A-Za-z][A-Za-z']*", text))
        words = [m.group(0).lower() for m in tokens]
        best: tuple[float, int, int, str] | None = None
        for i in range(len(words)):
            for n in (1, 2):
                span = words[i : i + n]
                if len(span) < n or any(self._fixed(w) for w in span):
                    continue
                if i + n < len(words) and not self._fixed(words[i + n]) and len(words[i + n]) > 2:
                    continue  # a word before another content word describes it ("rain boots"): not the kind
                joined = "".join(span)
                if len(joined) < 3:
                    continue
                threshold = UNSURE_THRESHOLD if any(w in unsure for w in span) else SURE_THRESHOLD
                for term in self._by_len.get(1, []):
                    if term in (joined, *singular_forms(joined)) or joined in singular_forms(term):
                        continue  # the same word ("sports" is no misheard "Sport")
                    if any(w in asked for w in span) and _sound(joined) != self._sounds[term]:
                        continue  # a plural noun asked for changes only for a homophone ("teas" -> tees)
                    sim = self._similarity(joined, term)
                    if sim >= threshold and (best is None or sim > best[0]):
                        best = (sim, i, i + n, term)
        if best is None:
            return None
        sim, start, end, term = best
        meant, kind = self._terms[term]
        heard = text[tokens[start].start() : tokens[end - 1].end()]
        fixed = text[: tokens[start].start()] + meant.lower() + text[tokens[end - 1].end() :]
        return fixed, Repair(heard, meant, kind, round(sim, 3), "sound")

    def _fixed(self, word: str) -> bool:
        """Words that are never a misheard product word: function words, numbers, colours, known terms."""
        return (word in _COMMON or word in NUMBER_WORDS or word in COLOR_SYNONYMS or word in self._terms
                or word.isdigit())

    def _similarity(self, heard: str, term: str) -> float:
        """Spelling and sound similarity in [0, 1]; 0 unless the first sounds agree (so 'laptops' is no 'tops')."""
        sound_heard, sound_term = _sound(heard), self._sounds[term]
        if not sound_heard or not sound_term or sound_heard[0] != sound_term[0]:
            return 0.0
        if not 0.5 <= len(heard) / max(1, len(term.replace(" ", ""))) <= 2.0:
            return 0.0
        spelling = fuzz.ratio(heard, term.replace(" ", "")) / 100
        sound = fuzz.ratio(sound_heard, sound_term) / 100
        return 0.5 * spelling + 0.5 * sound


_CONSTRAINT_RE = re.compile(r"\d+|\b(?:under|over|below|above|less|more|size|small|medium|large|extra)\b")


def _same_constraints(a: str, b: str) -> bool:
    """Whether two hypotheses say the same numbers, limits and colours (an alternative may only fix words)."""

    def key(text: str) -> tuple[list[str], set[str]]:
        low = text.lower()
        return _CONSTRAINT_RE.findall(low), {canonical_color(w) for w in _words(low) if w in COLOR_SYNONYMS}

    return key(a) == key(b)


def _differing(a: str, b: str) -> str:
    """The words of `a` that `b` does not have (what the better hypothesis replaced)."""
    other = set(_words(b))
    return " ".join(w for w in _words(a) if w not in other) or a


def _keeps(nouns: set[str], alternative: str) -> bool:
    """Whether a hypothesis keeps these nouns, or a word that sounds the same ("tees" for "teas")."""
    words = _words(alternative)
    sounds = {_sound(w) for w in words}
    return all(n in words or _sound(n) in sounds for n in nouns)


def _plural_nouns(text: str) -> set[str]:
    """The plural nouns of a transcript ("shoes", "bottles"): things asked for, which Whisper wrote as whole words.

    A misheard product word is rarely one ("black hold", "a who d"), so these are repaired only at typo distance.
    """
    return {w for w in _words(text) if len(w) >= 4 and w.endswith("s") and not w.endswith(("ss", "'s", "us", "is"))
            and w not in _COMMON and w not in NUMBER_WORDS}


def _after_colour(text: str) -> set[str]:
    """Words right after a colour ("black hold"): where a request puts its product word."""
    words = _words(text)
    return {b for a, b in zip(words, words[1:], strict=False) if a in COLOR_SYNONYMS and b not in COLOR_SYNONYMS}


def _unstable_words(text: str, alternatives: Sequence[str]) -> set[str]:
    """Words of the best hypothesis that some other hypothesis does not contain (Whisper was unsure of them)."""
    if not alternatives:
        return set()
    words = set(_words(text))
    unstable: set[str] = set()
    for alt in alternatives:
        unstable |= words - set(_words(alt))
    return unstable
