"""Catalog-aware recognition (#8): the catalog's spoken vocabulary, the Whisper prompt and the repair of misheard
product words, on a small catalog built here (no demo or Luma words in the rules) and on luma-dev when present."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from assistant.catalog.model import Catalog, Product
from assistant.catalog.view import CatalogView
from assistant.conversation.vocabulary import PROMPT_MAX_WORDS, CatalogVocabulary
from assistant.core.frames import ProductResults, ReplyTextDelta, ResponseDone, Transcript, UserTurn
from assistant.runtime.turn import Brain
from assistant.runtime.voice import FINAL_BEAM_SIZE, VoiceInput, VoiceOptions, transcribe_options
from assistant.search.query import ProductHit, SearchQuery
from tests.fakes import SR, EnergyVAD, FakeSTT, silence, tone
from tests.shared_data import LUMA_DIR


def _product(pid: str, title: str, category: str, price: float, colours: list[str], **attrs: object) -> Product:
    return Product.from_dict({
        "id": pid, "title": title, "category": category, "categories": [category], "price": price,
        "currency": "USD", "brand": attrs.pop("brand", None), "description": f"The {title}.",
        "attributes": {"color": colours, "size": ["S", "M", "L"], **attrs},
    })


def small_catalog() -> Catalog:
    """A merchant's own outdoor catalog: made-up product lines, kinds named by its category paths and titles."""
    return Catalog([
        _product("a1", "Quillon Hoodie", "Women/Tops/Hoodies", 45.0, ["Black", "Grey"]),
        _product("a2", "Ferro Zip Hoodie", "Women/Tops/Hoodies", 62.0, ["Black"]),
        _product("a3", "Tasca Trail Pant", "Women/Bottoms/Pants", 70.0, ["Green"]),
        _product("a4", "Velmo Hiking Pant", "Women/Bottoms/Pants", 55.0, ["Black"]),
        _product("a5", "Orrin Daypack", "Gear/Bags", 80.0, ["Red"], style_general=["Backpack"]),
        _product("a6", "Sprocket Water Flask", "Gear/Bottles", 19.0, ["Blue"], brand="Peakline"),
    ])


@pytest.fixture(scope="module")
def vocab() -> CatalogVocabulary:
    return CatalogVocabulary.from_catalog(small_catalog())


def test_vocabulary_comes_from_the_catalog(vocab: CatalogVocabulary) -> None:
    kinds = set(vocab.kinds.values())
    assert {"hoodies", "pants", "bags", "bottles", "backpack"} <= kinds  # category segments, style values
    assert vocab.kinds["hoodie"] == "hoodies" and vocab.kinds["pant"] == "pants"  # spoken singular forms
    assert vocab.kinds["hoody"] == "hoodies"  # the parser's spoken aliases of a kind the catalog has
    assert {"quillon", "ferro", "tasca", "velmo", "orrin", "sprocket"} <= set(vocab.lines)
    assert vocab.lines["quillon"] == ("a1",)
    assert vocab.brands == {"peakline": "Peakline"}
    assert {"black", "grey", "green", "red", "blue"} <= set(vocab.colours)
    assert "women" not in vocab.kinds and "black" not in vocab.lines  # departments and colours are not kinds


def test_prompt_lists_kinds_first_then_brands_and_lines(vocab: CatalogVocabulary) -> None:
    prompt = vocab.prompt
    assert prompt.startswith("We sell ")
    assert prompt.index("hoodies") < prompt.index("Peakline") < prompt.index("Quillon")
    assert len(prompt.split()) <= PROMPT_MAX_WORDS + 2
    assert "," not in prompt  # a comma list makes Whisper transcribe in list mode


SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po")


def _name(i: int) -> str:
    return (SYLLABLES[i % 10] + SYLLABLES[i // 10] + "ra").capitalize()


def test_prompt_puts_the_lines_on_screen_first() -> None:
    products = [_product(f"p{i}", f"{_name(i)} Fleece Jacket", "Women/Jackets", 50.0, ["Black"]) for i in range(100)]
    vocab = CatalogVocabulary.from_catalog(Catalog(products))
    assert len(vocab.lines) == 100
    in_prompt = [n for n in vocab.line_names.values() if n in vocab.prompt]
    assert len(in_prompt) < 100  # not every line fits
    missing = [i for i in range(100) if _name(i) not in vocab.prompt][:2]
    on_screen = vocab.prompt_for([f"p{i}" for i in missing])
    names = on_screen.split(". ", 1)[1]
    assert names.startswith((f"{_name(missing[0])} {_name(missing[1])}", f"{_name(missing[1])} {_name(missing[0])}"))
    assert vocab.prompt_for([]) == vocab.prompt


def test_prompt_keeps_to_its_budget_on_a_big_catalog() -> None:
    products = [_product(f"p{i}", f"{_name(i % 100)}{SYLLABLES[i // 100]} Fleece Jacket", "Women/Jackets", 50.0,
                         ["Black"]) for i in range(400)]
    vocab = CatalogVocabulary.from_catalog(Catalog(products))
    assert len(vocab.prompt.split()) <= PROMPT_MAX_WORDS + 2
    assert vocab.prompt.startswith("We sell jackets")  # the kinds survive the cut, the long tail of lines does not


def test_fingerprint_changes_with_the_catalog(vocab: CatalogVocabulary) -> None:
    bigger = Catalog([*small_catalog(), _product("a7", "Marrow Rain Shell", "Women/Jackets", 99.0, ["Yellow"])])
    other = CatalogVocabulary.from_catalog(bigger)
    assert other.fingerprint != vocab.fingerprint
    assert "marrow" in other.lines and "jackets" in other.prompt


@pytest.mark.parametrize(("heard", "meant", "score"), [
    ("show me a black hold under fifty dollars", "show me a black hoodies under fifty dollars", -0.3),
    ("black hold under fifty", "black hoodies under fifty", -0.3),
    ("do you have any hoddies", "do you have any hoodies", None),  # a typo, typed
])
def test_misheard_kind_is_repaired_and_constraints_stay(vocab: CatalogVocabulary, heard: str, meant: str,
                                                        score: float | None) -> None:
    understood = vocab.repair(heard, (), score)
    assert understood.text == meant
    assert understood.repairs[0].meant == "hoodies"
    assert understood.shown_as() == "Showing hoodies."


@pytest.mark.parametrize("text", ["black hold under fifty", "yellow rain boots in a size 7 please"])
def test_typed_words_are_never_taken_for_sounds_alike(vocab: CatalogVocabulary, text: str) -> None:
    assert vocab.repair(text).changed is False  # typed: only typos are repaired
    if "rain" in text:  # a word describing the next one is no misheard kind, typed or heard
        assert vocab.repair(text, (), -0.3).changed is False


def test_heard_nouns_and_function_words_are_not_swapped_for_catalog_terms(vocab: CatalogVocabulary) -> None:
    # A plural noun Whisper wrote whole is something asked for ("water bottles" must not become "water bottoms",
    # "running shoes" running pants): only a homophone replaces it.
    assert not vocab.repair("I'm looking for running shoes", [("I'm looking for running pants", -0.4)], -0.3).changed
    assert not vocab.repair("any warm packs", [("any warm backpacks", -0.4)], -0.3).changed
    assert vocab.repair("any warm hoody's", [("any warm hoodies", -0.4)], -0.3).changed  # not a plural noun
    # An alternative that only turns function words into a name is no repair ("in a medium" -> "Ina medium").
    assert not vocab.repair("in a small", [("Orrin small", -0.32)], -0.3).changed


@pytest.mark.parametrize("text", [
    "do you sell laptops",  # a real word Whisper was sure of: a kind the catalog lacks, not 'tops' or 'pants'
    "what's your return policy",
    "where is my order one two three four five",
    "I'd like to talk to a person",
    "show me black hoodies under fifty dollars",  # already names a kind
    "the quillon hoodie in grey",
    "do you have dresses",
])
def test_words_heard_right_are_left_alone(vocab: CatalogVocabulary, text: str) -> None:
    assert vocab.repair(text).text == text
    assert vocab.repair(text, [(text.replace("a", "e"), -0.4)], -0.3).changed is False  # Whisper unsure: still kept


def test_a_beam_hypothesis_naming_a_catalog_term_wins(vocab: CatalogVocabulary) -> None:
    best = "Show me a black holding under $50."
    alternatives = [("Show me a black hoodie under $50.", -0.45), ("Show me a black holding under $15.", -0.5)]
    understood = vocab.repair(best, alternatives, -0.3)
    assert understood.text == "Show me a black hoodie under $50."
    assert understood.repairs[0].source == "n-best"


def test_a_hypothesis_that_changes_a_constraint_or_scores_far_worse_is_not_taken(vocab: CatalogVocabulary) -> None:
    best = "Show me something black under $50."
    assert vocab.repair(best, [("Show me the Velmo pant in black under $15.", -0.35)], -0.3).changed is False
    assert vocab.repair(best, [("Show me the Velmo pant in black under $50.", -2.0)], -0.3).changed is False


def test_unsure_words_are_repaired_at_a_looser_distance(vocab: CatalogVocabulary) -> None:
    text = "I want the velvet hiking pants"  # 'velvet' differs across hypotheses: Whisper was unsure of it
    understood = vocab.repair(text, [("I want the velma hiking pants", -0.5)], -0.4)
    # it names a kind already ('pants'): no sound repair is needed for the search to be right
    assert understood.text in (text, "I want the velma hiking pants")
    lonely = vocab.repair("show me the tasker in green", [("show me the tasca in green", -0.9)], -0.3)
    assert lonely.text == "show me the tasca in green"  # sound repair of the unsure word to a product line


class RecordingSearcher:
    vocab = None
    ranked = False

    def __init__(self) -> None:
        self.catalog = small_catalog()
        self.queries: list[SearchQuery] = []

    def search(self, query: SearchQuery, **kwargs: object) -> list[ProductHit]:
        self.queries.append(query)
        hits = [ProductHit(p, 1.0, "test") for p in self.catalog if "hood" in p.title.lower()
                and (query.max_price is None or p.price <= query.max_price)]
        return hits[: query.k]


async def _reply(brain: Brain, turn: UserTurn) -> tuple[str, list[ProductHit]]:
    text, hits = "", []
    async for frame in brain.respond(turn, "r1"):
        if isinstance(frame, ProductResults):
            hits = list(frame.hits)
        elif isinstance(frame, ReplyTextDelta):
            text += frame.delta
        elif isinstance(frame, ResponseDone):
            text = frame.text or text
    return text, hits


async def test_brain_searches_what_was_meant_and_says_so(vocab: CatalogVocabulary) -> None:
    searcher = RecordingSearcher()
    brain = Brain(searcher, tts=None, vocabulary=vocab)
    text, hits = await _reply(brain, UserTurn(item_id="i1", text="black hold under fifty dollars", wants_audio=False,
                                              avg_logprob=-0.3))
    query = searcher.queries[-1]
    assert "hoodie" in query.text and query.max_price == 50.0 and query.color == "black"
    assert text.startswith("Showing hoodies.")
    assert [h.product.id for h in hits] == ["a1"]


async def test_brain_without_repair_searches_the_words_heard(vocab: CatalogVocabulary) -> None:
    searcher = RecordingSearcher()
    brain = Brain(searcher, tts=None, vocabulary=vocab, repair=False)
    text, _ = await _reply(brain, UserTurn(item_id="i1", text="black hold under fifty dollars", wants_audio=False,
                                              avg_logprob=-0.3))
    assert "hold" in searcher.queries[-1].text and not text.startswith("Showing")


def test_transcribe_options_final_and_partial() -> None:
    final = transcribe_options("en", "Hoodies, pants.", final=True)
    assert final.beam_size == FINAL_BEAM_SIZE and final.num_hypotheses > 1 and final.initial_prompt == "Hoodies, pants."
    partial = transcribe_options("en", "Hoodies, pants.", final=False)
    assert partial.beam_size == 1 and partial.num_hypotheses == 1 and partial.initial_prompt == "Hoodies, pants."
    greedy = transcribe_options("en", None, final=True, beam_size=1)
    assert greedy.beam_size == 1 and greedy.initial_prompt is None


async def _one_spoken_turn(stt: FakeSTT, prompt: Any) -> tuple[VoiceInput, list[Transcript]]:
    """Stream one utterance (a tone between silences) through server VAD; return the voice input and its finals."""
    finals: list[Transcript] = []

    async def emit(_: object) -> None:
        return None

    async def on_final(t: Transcript) -> None:
        finals.append(t)

    voice = VoiceInput(stt, EnergyVAD, VoiceOptions(), emit, on_final, prompt=prompt)
    speech = np.concatenate([silence(0.3), tone(1.2), silence(1.0)])
    step = SR // 50
    for i in range(0, speech.size, step):
        await voice.append((np.clip(speech[i:i + step], -1, 1) * 32767).astype("<i2").tobytes())
    for _ in range(100):
        if finals:
            break
        await asyncio.sleep(0.02)
    return voice, finals


async def test_voice_input_prompts_finals_with_the_current_catalog_prompt() -> None:
    stt = FakeSTT("black hoodie")
    prompt = {"text": "Hoodies."}
    voice, finals = await _one_spoken_turn(stt, lambda: prompt["text"])
    assert finals and finals[0].text == "black hoodie"
    used = [o for o in stt.options if o is not None and o.beam_size > 1]
    assert used and all(o.initial_prompt == "Hoodies." for o in used)
    prompt["text"] = "Jackets."  # a catalog reload: the next decode reads the new prompt
    assert voice._transcribe_options(final=True).initial_prompt == "Jackets."
    await voice.close()


@pytest.mark.skipif(not (LUMA_DIR / "products.jsonl").is_file(), reason="luma-dev not available")
def test_luma_vocabulary_and_repairs() -> None:
    vocab = CatalogVocabulary.from_catalog(Catalog.load_jsonl(Path(LUMA_DIR / "products.jsonl")))
    assert {"hoodies", "jackets", "tees", "pants", "shorts", "bags", "watches", "leggings"} <= set(vocab.kinds.values())
    assert {"mona", "karmen", "hera", "sahara", "ingrid"} <= set(vocab.lines)
    assert vocab.prompt.startswith("We sell ") and "hoodies" in vocab.prompt and "leggings" in vocab.prompt
    assert vocab.repair("show me a black hold under fifty dollars", (), -0.3).text == \
        "show me a black hoodies under fifty dollars"
    assert vocab.repair("do you sell laptops").changed is False


class _Reindexing:
    """A searcher that only records the catalog reloads it is given (the index itself is tested elsewhere)."""

    def __init__(self) -> None:
        self.updates = 0

    def update(self, catalog: Catalog) -> dict[str, int]:
        self.updates += 1
        return {"products": len(catalog)}


def test_ingest_rebuilds_the_vocabulary_and_the_sessions_prompt(tmp_path: Path) -> None:
    from assistant.catalog.store import default_store
    from assistant.runtime.session import Engines
    from assistant.runtime.uploads import ImageStore
    from server.engines import App, asr_prompt
    from server.settings import Settings

    store = default_store(tmp_path)
    store.upsert(list(small_catalog()))
    catalog = store.load_catalog()
    settings = Settings(data_dir=tmp_path)
    searcher = _Reindexing()
    view = CatalogView(catalog)
    brain = Brain(searcher, tts=None, view=view)  # the view the app swaps on a reload
    engines = Engines(stt=FakeSTT(), brain=brain, vad_factory=EnergyVAD, asr_prompt=asr_prompt(settings, brain))
    app = App(settings=settings, engines=engines, view=view, searcher=searcher, tts=None,
              images=ImageStore(tmp_path / "uploads"), store=store)
    assert engines.asr_prompt is not None
    before, fingerprint = engines.asr_prompt([]), brain.vocabulary.fingerprint  # type: ignore[union-attr]
    assert "Marrow" not in before
    store.upsert([_product("a7", "Marrow Rain Shell", "Women/Jackets", 99.0, ["Yellow"])])
    app.reload_catalog()
    assert searcher.updates == 1
    assert brain.vocabulary is not None and brain.vocabulary.fingerprint != fingerprint
    assert "marrow" in brain.vocabulary.lines and "jackets" in engines.asr_prompt([])
    assert engines.asr_prompt(["a7"]).split(". ", 1)[1].startswith("Peakline Marrow")  # on screen: first
    understood = brain.vocabulary.repair("show me the marow shell", [("show me the mirror shell", -0.5)], -0.4)
    assert "marrow" in understood.text.lower()
    store.close()


class FirstEmptySTT(FakeSTT):
    """Decodes nothing trusted the first time a final is asked for, then the words (as Whisper sometimes does)."""

    def transcribe(self, audio: np.ndarray, options: Any = None) -> Any:
        result = super().transcribe(audio, options)
        finals = [o for o in self.options if o is not None and o.beam_size > 1]
        if options is not None and options.beam_size > 1 and len(finals) == 1:
            from speech.stt import Transcription

            return Transcription("", "en", -0.9, 0.1, result.duration_s, is_hallucination=True)
        return result


async def test_a_final_that_decodes_to_nothing_is_decoded_once_more_the_other_way() -> None:
    stt = FirstEmptySTT("got any sweatshirts")
    voice, finals = await _one_spoken_turn(stt, lambda: "We sell sweatshirts.")
    assert finals and finals[0].text == "got any sweatshirts"
    prompts = [o.initial_prompt for o in stt.options if o is not None and o.beam_size > 1]
    assert prompts[0] == "We sell sweatshirts." and prompts[-1] is None  # the retry drops the prompt
    await voice.close()
