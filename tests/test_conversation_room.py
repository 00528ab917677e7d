"""Product names and catalog coverage (#9), on a catalog built here: what a turn names, what the catalog lacks."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from assistant.catalog.model import Catalog, Product
from assistant.conversation.coverage import CatalogCoverage
from assistant.conversation.names import ProductNames
from assistant.conversation.vocabulary import CatalogVocabulary
from assistant.search.query import ProductHit, QueryVocab, parse_query


def _p(pid: str, title: str, category: str, description: str = "", **attrs: object) -> Product:
    return Product.from_dict({"id": pid, "title": title, "category": category, "categories": [category],
                              "price": 50.0, "currency": "USD", "description": description,
                              "attributes": {"color": ["Black"], "size": ["S", "M"], **attrs}})


CATALOG = Catalog([
    _p("h1", "Quillon Fleece Hoodie", "Women/Tops/Hoodies & Sweatshirts", "Warm fleece.", material=["Polyester"]),
    _p("h2", "Ferro Zip Hoodie", "Women/Tops/Hoodies & Sweatshirts", "Light cotton.", material=["Cotton"]),
    _p("s1", "Ansel Crew Sweatshirt", "Women/Tops/Hoodies & Sweatshirts", "Soft cotton."),
    _p("j1", "Tasca Softshell Jacket", "Women/Tops/Jackets", "Sheds wind."),
    _p("j2", "Velmo Canvas Jacket", "Women/Tops/Jackets", "Waxed canvas."),
    _p("b1", "Kestrel Day Pack", "Gear/Bags", "Fits a 15 inch laptop.", style_bags=["Backpack", "Laptop"]),
    _p("t1", "Sprocket Strap 6 foot", "Gear/Fitness", "Loops around a yoga mat.", climate=["Hot"]),
    _p("t2", "Sprocket Strap 10 foot", "Gear/Fitness"),
    _p("d1", "Harbor Duffle", "Gear/Bags", "A roomy gym bag."),
    _p("d2", "Pier Duffle", "Gear/Bags", "A weekend bag."),
    _p("w1", "Track Lap Watch", "Gear/Watches", "Helps you track your laps. Water resistant to 50 meters."),
    _p("w2", "Pellam Sport Watch", "Gear/Watches", "A big digital face and an alarm."),
    _p("g1", "Orla Ball 55 cm", "Gear/Fitness", "An exercise ball."),
    _p("g2", "Orla Ball 65 cm", "Gear/Fitness", "An exercise ball for taller people."),
])
VOCAB = CatalogVocabulary.from_catalog(CATALOG)
NAMES = ProductNames(CATALOG, VOCAB)
COVERAGE = CatalogCoverage(CATALOG, VOCAB)
QUERIES = QueryVocab.from_catalog(CATALOG)


def _hits(*ids: str) -> list[ProductHit]:
    return [ProductHit(CATALOG.get(i), 1.0, "test") for i in ids]  # type: ignore[arg-type]


def _named(text: str, shown: list[ProductHit] | None = None) -> list[str]:
    return [n.hit.product.id for n in NAMES.named(text, shown or [])]


def test_names_found_in_the_order_said_on_screen_and_in_the_catalog() -> None:
    assert _named("compare the ferro hoodie and the quillon hoodie") == ["h2", "h1"]
    assert _named("is the quillon one warm enough") == ["h1"]
    assert _named("the softshell or the canvas jacket") == ["j1", "j2"]  # distinctive title words as names
    assert _named("which is cheaper, the tasca or the velmo", _hits("j2", "j1")) == ["j1", "j2"]
    assert _named("the ten foot one", _hits("t1", "t2")) == ["t2"]  # a number word naming one title on screen


def test_names_heard_slightly_wrong_and_words_that_are_no_names() -> None:
    assert _named("the quilon hoodie") == ["h1"]  # a close spelling of a line name
    assert _named("do you have any hoodies") == []
    assert _named("is it light enough") == []  # a descriptive word outside a naming phrase
    assert _named("the second one", _hits("h1", "h2")) == []


def _absence(text: str) -> tuple[str, bool] | None:
    query = parse_query(text, QUERIES)
    found = COVERAGE.absence(query, text)
    return (found.phrase, found.kind) if found is not None else None


def test_absent_kinds_brands_and_materials_are_found() -> None:
    assert _absence("do you sell laptops") == ("laptops", True)  # only descriptions and a bag style say laptop
    assert _absence("do you have any dresses") == ("dresses", True)
    assert _absence("leather jackets") == ("leather jackets", False)
    assert _absence("any nike hoodies") == ("nike hoodies", False)
    assert _absence("show me men's jackets") == ("men's jackets", False)  # a department the catalog lacks


def test_absent_kinds_whatever_their_phrasing() -> None:
    assert _absence("i need a yoga mat") == ("yoga mats", True)  # a noun only a description uses, said back plural
    assert _absence("do you have a hat") == ("hats", True)  # no misheard attribute value ("Hot"): typed as meant
    assert _absence("any hoodies for kids") == ("kids' hoodies", False)
    assert _absence("a hoodie with a touch screen") == ("hoodies with a touch screen", False)  # said as asked
    assert _absence("do you carry nike") == ("nike", True)  # a brand is no counted noun: not "nikes"


def test_what_the_catalog_has_is_not_absent() -> None:
    for text in ("show me hoodies", "a cotton hoodie", "a hoody", "fleece hoodies", "the canvas jacket",
                 "something warm for hiking in the rain", "hoodies under fifty dollars", "a backpack for my laptop",
                 "um hoodies then"):
        assert _absence(text) is None, text


def test_other_kinds_in_a_shared_category_are_told_apart() -> None:
    query = parse_query("show me sweatshirts", QUERIES)
    assert COVERAGE.head_kind(query) == "sweatshirts"
    assert COVERAGE.is_kind(CATALOG.get("s1"), "sweatshirts")  # type: ignore[arg-type]
    assert not COVERAGE.is_kind(CATALOG.get("h1"), "sweatshirts")  # "Hoodies & Sweatshirts" alone says neither
    assert COVERAGE.head_kind(parse_query("something warm", QUERIES)) is None


def test_a_kind_named_with_another_kind_asks_for_both() -> None:
    def kinds(text: str) -> list[str]:
        return COVERAGE.asked_kinds(parse_query(text, QUERIES))

    assert kinds("show me a duffle bag") == ["duffle", "bag"]  # duffles are a kind here (shared title head)
    assert kinds("a fleece hoodie") == ["hoodie"]  # a title word, not a kind of its own: a quality of hoodies
    assert kinds("something warm") == []
    duffle = [p for p in ("d1", "d2", "b1") if all(COVERAGE.is_kind(CATALOG.get(p), k) for k in ("duffle", "bag"))]
    assert duffle == ["d1", "d2"]  # the day pack is a bag but no duffle


def test_measurements_come_from_the_description() -> None:
    from assistant.conversation.answers import measurements

    assert measurements(_hits("b1")[0]) == ["Fits a 15 inch laptop."]
    assert measurements(_hits("h1")[0]) == []  # "Warm fleece." gives no measure


def test_a_request_the_classifier_calls_a_complaint_is_searched() -> None:
    from assistant.conversation.dialogue import Dialogue, DialogueState
    from assistant.conversation.intent import Intent

    class Complaining:  # the classifier's mistake on an unusual request
        label = "complaint"

        def recognize(self, text: str, context: object) -> Intent:
            return Intent(self.label, {}, 0.9, query=parse_query(text, QUERIES), text=text)

    searched: list[str] = []

    def search(text: str, **kw: object) -> tuple[object, list[ProductHit]]:
        searched.append(text)
        return kw.get("query") or parse_query(text, QUERIES), _hits("h1")

    dialogue = Dialogue(Complaining(), catalog=CATALOG, vocabulary=VOCAB)
    plan = dialogue.plan("a fleece hoodie in black", image_id=None, state=DialogueState(), search=search, signals=None,
                               k=5)
    assert plan.intent is not None and plan.intent.name == "search" and searched and not plan.handoff
    complaint = dialogue.plan("my hoodie arrived broken", image_id=None, state=DialogueState(), search=search,
                                    signals=None, k=5)
    assert complaint.intent is not None and complaint.intent.name == "complaint" and complaint.handoff
    # a "question" with nothing to be about, or a policy question naming a kind, asks for products
    recognizer = Complaining()
    dialogue = Dialogue(recognizer, catalog=CATALOG, vocabulary=VOCAB)
    for label, text in (("product_question", "a hoodie with a rain cover"), ("policy", "a hoodie with rfid blocking")):
        recognizer.label = label
        plan = dialogue.plan(text, image_id=None, state=DialogueState(), search=search, signals=None, k=5)
        assert plan.intent is not None and plan.intent.name == "search" and not plan.handoff, (label, plan)
        assert plan.reply is not None and plan.reply.startswith("We don't carry hoodies with "), plan.reply


def test_the_kind_asked_for_comes_before_its_purpose() -> None:
    assert parse_query("a bag for my jacket", QUERIES).category == "bag"  # not the longer "jacket" after "for"
    assert parse_query("jackets for the gym", QUERIES).category == "jacket"


def test_ordinary_words_and_title_words_are_no_names_and_families_are_one_product() -> None:
    assert _named("can it track my sleep") == []  # "track" is written as a plain word in the catalog's own text
    assert _named("the track watch") == ["w1"] and _named("the track one") == ["w1"]
    assert _named("a ball for my office") == []  # a title word heard right is no misheard line name
    # one product listed once per size: the name picks the family, and the family is known
    assert _named("what sizes does the orla ball come in") in (["g1"], ["g2"])
    assert [p.id for p in NAMES.family("g2")] == ["g1", "g2"]
    assert [p.id for p in NAMES.family("w1")] == ["w1"]


def test_what_the_shopper_does_is_no_product_asked_for() -> None:
    assert CatalogCoverage.defining_words("I cycle to the office, which jacket would you recommend") == []
    assert CatalogCoverage.defining_words("I'm shopping for my mom, she'd like an alpaca sweater") == \
        ["alpaca", "sweater"]
    assert CatalogCoverage.defining_words("i need something to carry my gym clothes in") == []
    assert CatalogCoverage.defining_words("bit pricey. anything along those lines under sixty?") == []


def test_a_purpose_word_opening_the_request_opens_no_purpose_clause() -> None:
    assert CatalogCoverage.defining_words("which of your watches can track my sleep") == ["watches", "track", "sleep"]
    assert CatalogCoverage.defining_words("I'd like to order a doorway pull up bar please") == \
        ["doorway", "pull", "bar"]
    assert CatalogCoverage.defining_words("a 29 works, what's under fifty") == []
    assert _named("do you do leggings in tall sizes? I'm six foot one") == []  # a height, not the 6 foot strap


def test_measurements_that_answer_the_question_come_first() -> None:
    from assistant.conversation.answers import measurements

    watch = _hits("w1")[0]
    assert measurements(watch, "how deep can I swim with it") == ["Water resistant to 50 meters."]


def test_a_descriptive_word_before_a_plural_kind_asks_for_the_kind() -> None:
    tops = _hits("h1", "h2", "s1")
    assert _named("fleece hoodies please", tops) == []  # "hoodie" is in two titles on screen: a kind asked for
    assert _named("crew sweatshirts please", tops) == ["s1"]  # one sweatshirt on screen: that one
    assert _named("the fleece hoodie", tops) == ["h1"]


def test_kinds_titles_name_and_collections_that_name_no_kind() -> None:
    products = [
        Product.from_dict({"id": f"l{i}", "title": f"{name} Leggings", "category": "Women/Bottoms/Pants",
                           "categories": ["Women/Bottoms/Pants", "Promotions/Pants", "Collections/Staff Picks"],
                           "price": 40.0, "attributes": {"material": ["Cotton"]}})
        for i, name in enumerate(("Orla", "Pim"))
    ] + [
        Product.from_dict({"id": f"f{i}", "title": f"{name} Hooded Fleece", "category": "Women/Tops/Hoodies",
                           "categories": ["Women/Tops/Hoodies"], "price": 50.0,
                           "attributes": {"material": ["Fleece"]}})
        for i, name in enumerate(("Tove", "Ulla"))
    ]
    vocab = QueryVocab.from_products(products)
    assert vocab.categories_for("leggings with a pocket") == {"Women/Bottoms/Pants"}  # a kind only titles name
    assert parse_query("which leggings would you recommend", vocab).category == "legging"  # not "Staff Picks"
    assert "pick" not in vocab.category_terms and "collection" not in vocab.category_terms
    assert "promotion" not in vocab.category_terms and "pant" in vocab.category_terms
    assert "fleece" not in vocab.category_terms  # a material that ends titles is no kind of its own


def test_a_clause_about_the_shopper_counts_only_for_what_the_catalog_never_says() -> None:
    assert CatalogCoverage.defining_words("a duffle I can take to the gym") == ["duffle"]
    assert CatalogCoverage.clause_words("a watch I can get engraved for my dad") == ["engraved"]
    assert COVERAGE.absence(parse_query("a track watch I can get engraved", QUERIES),
                            "a track watch I can get engraved") is not None
    assert COVERAGE.absence(parse_query("a day pack I can fit my laptop in", QUERIES),
                            "a day pack I can fit my laptop in") is None  # the catalog says laptop


def test_asides_participles_and_occasions_define_nothing() -> None:
    assert CatalogCoverage.defining_words("getting running shorts for my girlfriend") == ["running", "shorts"]
    assert CatalogCoverage.defining_words("birthday present for my boyfriend") == []
    assert CatalogCoverage.defining_words("she also mentioned a foam roller") == ["foam", "roller"]
    assert CatalogCoverage.defining_words("what other hoodies are properly warm") == ["hoodies", "warm"]
    aside = "shame. what other fleece hoodies do you have"
    assert COVERAGE.absence(parse_query(aside, QUERIES), aside) is None  # "shame" said on its own is no request
    terse = "cashmere. size S."
    assert COVERAGE.absence(parse_query(terse, QUERIES), terse) is not None  # a terse request is one


def test_only_the_clauses_that_ask_can_ask_for_what_we_lack() -> None:
    # what the shopper is doing, said before the request, is no product asked for
    for text in ("off to cancun next month!! need some fleece hoodies", "my nan is 78 and wants to keep active - "
                 "have you got an exercise ball", "hiking in the scottish highlands in october, what have you got in "
                 "jackets", "i want to get my dad a watch for fathers day", "I do hot yoga 3x a week and my old "
                 "hoodies are see-through now lol. anything under $60?", "she wants a hoodie"):
        assert _absence(text) is None, text
    # a request is still heard in any of its clauses, with or without its question mark
    assert _absence("do you have any scarves? ideally something warm") == ("scarves", True)
    assert _absence("do u have a jogging stroller? want to run with the baby") == ("jogging strollers", True)
    assert _absence("knee brace for running, my left knee hurts") is not None  # "my knee" is not what is asked
    assert _absence("got any leg warmers") == ("leg warmers", True)  # "warmers" is no verb of the shopper's
    assert COVERAGE.request_clause("off to cancun!! need some shorts") == "need some shorts"


def test_several_kinds_in_one_request_are_each_an_item() -> None:
    from assistant.conversation.several import ListedItems

    items = ListedItems(CATALOG, VOCAB)
    found = items.items("I need a duffle, a strap and an exercise ball - what do the three cost?")
    assert [(i.phrase, i.known, i.one) for i in found] == [("duffle", True, True), ("strap", True, True),
                                                          ("exercise ball", True, True)]
    assert [(i.phrase, i.known) for i in items.items("hoodies and a yoga mat")] == [("hoodies", True),
                                                                                  ("yoga mat", False)]
    for text in ("black and white hoodies", "compare the quillon and the ferro", "the quillon hoodie and the ferro "
                 "hoodie", "a medium and a large", "do you do hoodies in tall sizes? I'm six foot one and everything "
                 "is too short", "duffle or day pack"):
        assert items.items(text) == [], text


class _NoPolicies:
    def answer_policy(self, question: str) -> Any:
        from assistant.conversation.kb import UNSUPPORTED_TEXT, PolicyAnswer

        return PolicyAnswer(UNSUPPORTED_TEXT, (), supported=False, score=0.0)

    def passages(self) -> list[Any]:
        return []

    def published_contacts(self) -> tuple[str, ...]:
        return ()


def _talk(*turns: str, labels: dict[str, str] | None = None) -> list[Any]:
    """Turns through the dialogue over the test catalog: intents by first words (or `labels`, the classifier's
    mistakes), a search by title words, a knowledge base that knows no policy."""
    from assistant.conversation.dialogue import Dialogue, DialogueState
    from assistant.conversation.intent import Intent
    from assistant.memory.store import SQLiteMemory

    class Rules:
        def recognize(self, text: str, context: object) -> Intent:
            low = text.lower()
            name = "add_to_cart" if low.startswith(("put", "add", "make", "actually", "what's in")) else "search"
            name = (labels or {}).get(text, name)
            slots = {"quantity": 2} if " two " in f" {low} " else {}
            return Intent(name, slots, 0.9, query=parse_query(text, QUERIES), text=text)

    def search(text: str, **kw: Any) -> tuple[Any, list[ProductHit]]:
        said = {w.rstrip("s") for w in text.lower().split()}
        hits = [h for h in _hits(*(p.id for p in CATALOG.parents()))
                if said & {w.rstrip("s") for w in h.product.title.lower().split()}]
        return kw.get("query") or parse_query(text, QUERIES), hits

    with tempfile.TemporaryDirectory() as tmp:
        memory = SQLiteMemory(Path(tmp) / "memory.sqlite")
        state = DialogueState(memory=memory.open_session())
        dialogue = Dialogue(Rules(), catalog=CATALOG, vocabulary=VOCAB, kb=_NoPolicies())
        plans = [dialogue.plan(t, image_id=None, state=state, search=search, signals=None, k=5) for t in turns]
        memory.close()
    return plans


def test_one_of_each_kind_then_all_of_them_in_the_cart_and_a_line_changed_by_its_kind() -> None:
    listed, added, changed, cart = _talk("I need a harbor duffle, a strap and an exercise ball",
                                               "put all three in my basket in medium", "actually make it two straps",
                                               "what's in my basket?")
    assert listed.reply.startswith("Here's one of each: the Harbor Duffle at $50, the Sprocket Strap")
    assert [h.product.id for h in listed.hits][0] == "d1" and len(listed.hits) == 3
    assert added.reply.startswith("Added the Harbor Duffle in size M, the Sprocket Strap") and added.reply.endswith(
        "to your cart.") and len(added.hits) == 3
    assert changed.reply.startswith("Changed it: 2 of the Sprocket Strap")  # the strap's line, not the last one
    assert cart.reply.startswith("Your cart has ") and "2 of the Sprocket Strap" in cart.reply
    assert cart.reply.endswith("That's $200 in all.")


def test_a_kind_we_lack_in_a_list_is_said_first_and_the_rest_is_shown() -> None:
    (plan,) = _talk("a yoga mat and a duffle")
    assert plan.reply.startswith("We don't carry yoga mats. Here's what I have: the ")
    assert all(h.product.category == "Gear/Bags" for h in plan.hits)


def test_the_unwanted_quality_is_left_out() -> None:
    (plan,) = _talk("hoodies without cotton")
    assert [h.product.id for h in plan.hits] == ["h1"]  # the Ferro hoodie says cotton


def test_who_it_is_for_says_the_department_and_a_budget_is_a_price() -> None:
    assert parse_query("i want to get my dad a watch").gender == "men"
    assert parse_query("a running jacket for her").gender == "women"
    assert parse_query("a hoodie in her size").gender is None
    assert parse_query("only want to spend like 30 max").max_price == 30.0
    assert parse_query("i can spend 20 minutes a day").max_price is None
    assert parse_query("need some shorts, im a 29").size == "29"
    assert parse_query("i'm a 29 year old runner").size is None
    assert parse_query("I do hot yoga 3x a week").size is None
    assert parse_query("videos with no equipment", QUERIES).category is None


def test_is_it_a_kind_the_listing_never_says_is_answered_with_what_it_is_listed_as() -> None:
    from assistant.conversation.answers import what_it_says

    (ball,) = _hits("g1")
    assert what_it_says(ball, "is it a dvd?") == "The Orla Ball 55 cm is listed under Fitness; nothing in its " \
        "listing says dvd."
    assert what_it_says(ball, "is it an exercise ball?").startswith("About the Orla Ball 55 cm")  # it says so


def test_a_choice_said_as_a_statement_goes_in_the_cart() -> None:
    _, chosen = _talk("hoodies in medium", "hmm bit over budget. the ferro is fine, same size and colour")
    assert chosen.intent.name == "add_to_cart" and chosen.reply.startswith("Added the Ferro Zip Hoodie in size M")
    _, put = _talk("hoodies in medium", "whichever's cheapest, in the cart")
    assert put.intent.name == "add_to_cart"


def test_a_question_the_policies_do_not_answer_is_about_the_product_in_focus() -> None:
    question = "can the sleeves be rolled up"
    _, plan = _talk("tell me about the ferro hoodie", question, labels={question: "policy",
                                                                             "tell me about the ferro hoodie":
                                                                             "product_question"})
    assert plan.intent.name == "product_question" and "Ferro" in plan.reply and not plan.handoff
    (alone,) = _talk(question, labels={question: "policy"})  # nothing to be about: a person can help
    assert alone.handoff


def test_a_question_naming_a_product_is_about_it_whatever_the_classifier_said() -> None:
    question = "does the pellam sport watch have an alarm"
    (plan,) = _talk(question, labels={question: "out_of_scope"})
    assert plan.intent.name == "product_question" and "Pellam" in plan.reply and "alarm" in plan.reply


def test_things_to_wear_come_in_body_sizes() -> None:
    from assistant.conversation.dialogue import _body_sized

    def sized(*sizes: str) -> Product:
        return Product.from_dict({"id": "x", "title": "X", "category": "Gear", "price": 1.0,
                                  "attributes": {"size": list(sizes)}})

    assert _body_sized(sized("XS", "M", "XL")) and _body_sized(sized("28", "29")) and _body_sized(sized("one size"))
    assert not _body_sized(sized("55 cm")) and not _body_sized(sized("6 foot")) and not _body_sized(sized())


def test_measures_are_read_from_descriptions_and_compared() -> None:
    from assistant.conversation.measures import asked_measure, compare_on_measure, measures

    def bag(pid: str, description: str) -> ProductHit:
        return ProductHit(_p(pid, f"Bag {pid}", "Gear/Bags", description), 1.0, "test")

    box, said, none = bag("a", "Roomy.\n- Dimensions: 18\" x 10\" x 6\"."), bag("b", "- H 20\" x W 14\" x D 12\".\n"
                                                                                 "- Volume: 29 L."), bag("c", "Nice.")
    assert round(measures(box)["volume"].value, 1) == 17.7 and measures(said)["volume"].value == 29.0  # said wins
    assert measures(bag("w", "- Weight: 2 lbs, 8 oz."))["weight"].value == 1.13
    assert measures(ProductHit(_p("s", "Short S", "Women/Bottoms/Shorts", "- 5” inseam."), 1.0, "t"))[
        "length"].value == 5.0
    assert asked_measure("which one holds the most") == ("volume", True)
    assert asked_measure("which is lighter") == ("weight", False) and asked_measure("is it light blue") is None
    winner, read = compare_on_measure("is the first one roomier", [box, said])  # type: ignore[misc]
    assert winner is said and [m.dimension for _, m in read] == ["volume", "volume"]
    assert compare_on_measure("which is bigger", [box, none]) is None  # a listing that does not say: no verdict
    assert compare_on_measure("which is bigger", [box, said, none], partial=True)[0] is said  # type: ignore[index]
    assert compare_on_measure("which is cheaper", [box, said]) is None


def test_what_is_asked_is_found_in_whichever_clause_names_it() -> None:
    # the asking clause names nothing: the thing is in the other clause, the kind with the words before it
    assert _absence("waterproof trail shoes, do you have any?") == ("waterproof trail shoes", True)
    assert _absence("I love my old fleece hoodies. got any more?") is None
    # a purpose word in one clause does not hide what the next one asks for
    assert _absence("I run early in the morning. ideally a jacket with a heated lining") is not None
    # people are no request, a thing of the shopper's may be
    assert _absence("my garmin broke, do you sell those") is not None
    assert _absence("a watch that says the time out loud for my grandmother") is not None
    assert _absence("what have you got for a warm layer") is None  # "warm" before a noun is no thing asked for


def test_typed_text_is_never_repaired_by_sound() -> None:
    assert VOCAB.repair("do you have any qillon hoodies").text == "do you have any quillon hoodies"  # a slip
    assert VOCAB.repair("anything from quiller").text == "anything from quiller"  # typed as meant: no sound-alike
    assert VOCAB.repair("show me a black hold", score=-0.3).text == "show me a black hoodies"  # heard: misheard


def test_the_cart_is_read_back_whatever_the_classifier_called_the_question() -> None:
    question = "what do i have in my cart"
    _, plan = _talk("add the harbor duffle in medium", question, labels={question: "order_status"})
    assert plan.intent.name == "add_to_cart" and plan.reply == "Your cart has the Harbor Duffle at $50. That's $50 in all."


def test_a_word_that_sounds_like_ours_is_misheard_only_in_a_transcript() -> None:
    text = "anything from quillan"  # a brand we lack that sounds like the Quillon line
    assert COVERAGE.absence(parse_query(text, QUERIES), text, heard=True) is None  # maybe "Quillon", misheard
    assert COVERAGE.absence(parse_query(text, QUERIES), text, heard=False) is not None  # typed as meant
    typed = "do you have the ferro zip hoody in black"  # the named product's own word written as it sounds
    assert COVERAGE.absence(parse_query(typed, QUERIES), typed, heard=False) is None
    assert _absence_of("I'm after a Casio, the big digital one") == "casio"  # a name is no plural


def _absence_of(text: str) -> str | None:
    found = COVERAGE.absence(parse_query(text, QUERIES), text, heard=False)
    return found.phrase if found is not None else None


def test_the_kind_asked_for_is_read_in_the_clause_that_asks() -> None:
    text = "my nan is 78 and wants to keep active at home - have you got any duffles that would suit her"
    assert COVERAGE.asked_kinds(parse_query(text, QUERIES)) == ["duffles"]
    assert COVERAGE.asked_kinds(parse_query("a duffle bag for the gym", QUERIES)) == ["duffle", "bag"]


def test_a_title_word_before_a_kind_names_a_product_only_of_that_kind() -> None:
    assert _named("fleece hoodie please") == ["h1"]  # the Quillon Fleece Hoodie is a hoodie
    assert _named("fleece bag under 50") == []  # no fleece bag: "fleece" describes what is asked
