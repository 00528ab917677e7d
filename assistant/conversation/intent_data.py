"""Training utterances for the intent classifier (`assistant.conversation.intent`): templates filled with shopping words.

`training_examples()` is deterministic: templates per intent filled from small word lists (the demo catalog's
categories, colours and brands plus everyday products it does not sell), rendered the way a recogniser writes speech
(lower case, no punctuation, numbers in words or digits, an "um" here and there), and paired with the screen context
the intent needs ("cheaper" is a refinement only when products are on screen).

The benchmark's hand-written evaluation set (``bench/data/dialogue_utterances.jsonl``) was written separately; a test
checks the two never share a sentence.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

PER_INTENT = 150  # generated utterances per intent (before de-duplication)

CATEGORIES = (
    "hoodie", "hoodies", "t-shirt", "tee", "jacket", "rain jacket", "jeans", "running shoes", "sneakers", "boots",
    "hiking boots", "backpack", "dress", "summer dress", "hat", "beanie", "socks", "headphones", "water bottle",
    "sweater", "shorts", "scarf", "sunglasses", "watch", "leggings", "coat", "sandals", "skirt", "belt", "wallet",
    "gloves", "polo shirt", "trainers", "cap", "earbuds", "duffel bag",
)  # fmt: skip
COLOURS = ("black", "white", "navy", "blue", "red", "green", "grey", "gray", "beige", "pink", "yellow", "orange",
           "purple", "brown", "olive", "burgundy", "khaki", "cream")  # fmt: skip
SIZES = ("small", "medium", "large", "extra large", "xl", "xs", "size m", "size l", "size 9", "size ten",
         "size eight and a half", "xxl", "extra small", "a medium", "size 32")  # fmt: skip
BRANDS = ("Northvale", "Kestrel", "Urbanloom", "Tidewater", "Summit Row", "Brightfield", "Oakcrest", "Harbor & Pine",
          "Nike", "Adidas", "Patagonia", "Levi's")  # fmt: skip
GENDERS = ("men's", "women's", "kids", "for men", "for women", "for my son", "for a girl", "ladies", "boys")
PEOPLE = ("my mom", "my dad", "my sister", "my brother", "my wife", "my husband", "my girlfriend", "my boyfriend",
          "a friend", "my best friend", "my coworker", "my grandma", "my nephew", "my daughter", "my son", "my boss")
FILLERS = ("um", "uh", "so", "okay", "hmm", "like", "well", "right", "ok so", "yeah")
ACTIVITIES = ("hiking", "the gym", "yoga", "a wedding", "school", "travel", "the beach", "winter", "commuting",
              "a marathon", "camping", "the office")
ADJECTIVES = ("warmer", "lighter", "softer", "more durable", "comfier", "more waterproof", "sturdier", "better made")
PLACES = ("canada", "the uk", "germany", "australia", "mexico", "hawaii", "alaska", "france", "japan")

_NUM_WORDS = {
    5: "five", 10: "ten", 15: "fifteen", 20: "twenty", 25: "twenty five", 30: "thirty", 35: "thirty five",
    40: "forty", 45: "forty five", 50: "fifty", 60: "sixty", 70: "seventy", 75: "seventy five", 80: "eighty",
    90: "ninety", 100: "a hundred", 120: "a hundred and twenty", 150: "one hundred fifty", 200: "two hundred",
}  # fmt: skip

TEMPLATES: dict[str, tuple[str, ...]] = {
    "search": (
        "i'm looking for a {colour} {cat}", "show me {cat} under {price}", "do you have any {colour} {cat}",
        "i need {gender} {cat}", "find me a {brand} {cat}", "got any {cat} in {size}", "{colour} {cat} please",
        "i want some {cat} between {price} and {price2}", "search for {gender} {colour} {cat}",
        "can you show me {brand} {cat}", "do you sell {cat}", "i'm shopping for {cat} for the winter",
        "{cat} less than {price}", "any {cat} over {price}", "looking for {gender} {cat} in {size}",
        "what {cat} do you have", "show me your {cat}", "i'd like to see some {colour} {cat}",
        "need a new {cat} for running", "{brand} {cat} in {colour}", "are there any {cat} on sale",
        "i'm after a {cat} that costs under {price}", "let me see {colour} {cat} in {size}",
        "could you find {cat} for hiking", "browse {cat}", "{gender} {cat}", "i need a {cat} for work",
        "do you carry {brand}", "something warm like a {cat}", "cheap {cat}", "a {colour} {cat} in {size} please",
        "i'm hunting for {cat}", "what have you got in {cat}", "show {cat} from {brand}",
    ),
    "refine": (
        "cheaper", "anything cheaper", "show me cheaper ones", "something less expensive", "do you have it in {colour}",
        "in {colour}", "what about in {colour}", "same thing but {colour}", "in {size}", "do they come in {size}",
        "only {brand}", "just the {brand} ones", "under {price} please", "only show ones under {price}",
        "the {ordinal} one in {size}", "the {ordinal} one but in {colour}", "any other colors", "more options",
        "show me more", "something different", "not those, something more casual", "i'd prefer {colour}",
        "can i get that in {size}", "only {gender}", "make it {colour}", "more expensive ones",
        "something nicer", "a bit cheaper", "less than {price}", "nothing over {price}", "with a hood",
        "without the logo", "in a darker color", "lighter color maybe", "a size up", "smaller", "bigger ones",
        "the {ordinal} one in {colour}", "how about {brand} instead", "sort by price", "the cheapest one",
        "what else is there", "filter by {size}",
    ),
    "photo_lookup": (
        "what is this", "find this {cat}", "do you have this", "i took a photo of a {cat} i like",
        "can you find something like this picture", "here's a picture of what i want", "find me this exact {cat}",
        "what's this {cat} called", "search with my photo", "look at this pic", "something similar to this image",
        "match this photo", "i saw this {cat} on the street", "is this in your store", "can you identify this",
        "here's a screenshot", "find this in {colour}", "do you sell this one", "look up this picture",
        "i want the {cat} in this photo", "something that looks like this", "find this but cheaper",
        "where can i get this", "let me show you a picture", "use my camera", "take a look at this",
        "who makes this {cat}", "i'm sending you an image", "this one here",
    ),
    "compare": (
        "is the {colour} one {adj} than the {colour2} one", "which {cat} is {adj}", "is the {ordinal} one {adj}",
        "which of the {cat} is {adj}", "the {colour} or the {colour2} which is {adj}",

        "compare the {ordinal} and {ordinal2} one", "what's the difference between them",
        "which one is better", "which is warmer", "how does the {ordinal} compare to the {ordinal2}",
        "{brand} or {brand2}, which is better", "which of these is lighter", "is the {ordinal} better than the {ordinal2}",
        "what's the difference between the {colour} and the {colour2}", "which one should i get",
        "compare these two", "side by side please", "which lasts longer", "which one is more comfortable",
        "what's better for running", "which is cheaper, the {ordinal} or the {ordinal2}",
        "{cat} a or {cat} b", "how are they different", "pros and cons of each", "which would you pick",
        "which one is more waterproof", "is {brand} better than {brand2}", "which has better reviews",
        "versus the {ordinal} one", "the {ordinal} one vs the {ordinal2} one", "which is the best value",
    ),
    "product_question": (
        "does the {colour} one come in {size}", "is it available in {size}", "do they stretch",
        "what is the {cat} made from", "is the sizing accurate", "how does it fit", "can i wear it in the rain",

        "what is it made of", "what material is the {ordinal} one", "is this {cat} waterproof",
        "can i machine wash it", "how do i wash this", "what sizes does it come in", "does it run small",
        "is it true to size", "does the {ordinal} one come in {size}", "is it warm enough for winter",
        "is the {cat} breathable", "how much does it weigh", "what's the fabric", "is it cotton",
        "does it have pockets", "how long does the battery last", "is it in stock", "is the {colour} one available",
        "does it shrink", "can it go in the dryer", "is it dishwasher safe", "how heavy is the {cat}",
        "what colors does it come in", "tell me more about the {ordinal} one", "is it good for running",
        "does the {cat} have a hood", "what's the fit like", "is that leather", "how big is the {cat}",
        "what's the care instructions", "is it noise cancelling", "is it vegan", "does it fit wide feet",
        "how many liters is it", "is the {ordinal} one lined",
        "how much is the {ordinal} one", "what does the {ordinal} one cost", "what's the price of the {ordinal} one",
        "how much is it", "how much does the {colour} one cost", "how much are they", "what does it cost",
        "how much is that {cat}", "what's the price on the {colour} one",
    ),
    "add_to_cart": (
        "i'll have the {ordinal} one", "i'll go with the {colour} {cat} in {size}", "i'll go for the {ordinal} one",
        "ok i want it in {size} add it", "count me in for the {colour} one", "ring it up",

        "add it to my cart", "add the {ordinal} one to the cart", "i'll take it", "i'll take {n} of those",
        "put the {colour} one in my basket", "add {n} to my cart", "buy it", "i want to buy the {ordinal} one",
        "add to cart in {size}", "save it to my wishlist", "put it on my wish list", "add this to my favorites",
        "i'll buy the {colour} {cat}", "checkout please", "let's check out", "add the {cat} to my bag",
        "yes add it", "get me {n} of them", "order it", "purchase the {ordinal} one", "i'll get the {ordinal} one",
        "put {n} in the cart", "add the {ordinal} one in {size} to cart", "save the {ordinal} one for later",
        "add that to my list", "yes i want that one", "cart it", "throw it in my cart", "grab me {n} pairs",
        "i'd like to order the {colour} one",
    ),
    "order_status": (
        "where is my order", "track my package", "has my order shipped", "what's the status of order {order}",
        "when will my order arrive", "track order {order}", "my order number is {order}", "where's my stuff",
        "is order {order} on its way", "did my package ship yet", "when does my delivery come",
        "can you check order {order}", "where's my parcel", "has order {order} been delivered",
        "i ordered a {cat} last week where is it", "my tracking number please", "order status",
        "check my order", "when is my {cat} coming", "is my order out for delivery", "what happened to my order",
        "any update on my shipment", "estimated delivery for order {order}", "it says {order} is processing",
        "i placed an order yesterday has it shipped",
    ),
    "policy": (
        "what's your return policy", "can i return this", "how do returns work", "do you ship to {place}",
        "how much is shipping", "is shipping free", "how long does delivery take", "do you take paypal",
        "do you take credit cards", "can i pay in installments", "do you accept apple pay", "how do i get a refund",
        "can i exchange it for a different size", "what's the return window", "do i have to pay for return shipping",
        "is there free shipping over {price}", "do you offer express shipping", "what payment methods do you accept",
        "can i use a gift card", "is there a warranty", "how long do refunds take", "can i return without a receipt",
        "do you ship internationally", "what if it doesn't fit", "can i cancel my order", "do you price match",
        "is there a student discount", "do you do next day delivery", "how much are customs fees",
        "can i pay with klarna",
    ),
    "recommendation": (
        "which {cat} do you recommend for {activity}", "what's your most popular {cat}", "recommend a good {cat}",
        "what {cat} would be best for {activity}", "i need ideas for {activity}", "what's a good {cat} for {person}",

        "what would you recommend", "can you suggest a gift for {person}", "what should i get {person}",
        "i need a present for {person}", "any ideas for {person}'s birthday", "what goes with {colour} {cat}",
        "recommend something for me", "what's popular right now", "what are your best sellers",
        "surprise me", "i need a gift under {price}", "what would look good with my {cat}",
        "help me pick something for {person}", "what's trending", "what do you suggest for a hiking trip",
        "gift ideas for {person} who loves running", "what should i wear to a wedding",
        "pick something out for me", "what matches a {colour} {cat}", "something nice for {person}",
        "any recommendations for the gym", "what do people usually buy with this", "complete the outfit",
        "what's good for a beach vacation", "what would suit me", "a christmas present for {person}",
        "recommend a {cat} for {person}", "what's your favorite", "i don't know what to get {person}",
    ),
    "greeting": (
        "hi", "hello", "hey there", "good morning", "good evening", "hi shoptalk", "thanks", "thank you so much",
        "thanks for your help", "bye", "goodbye", "see you later", "that's all", "have a nice day", "cheers",
        "how are you", "hello there", "hey hey", "thanks a lot", "ok thanks bye", "great thank you", "you're the best",
        "awesome thanks", "good afternoon", "nice to meet you", "that's everything thanks", "i'm done thanks",
        "hiya", "morning", "thank you goodbye", "talk to you later", "appreciate it", "perfect thanks",
    ),
    "out_of_scope": (
        "play the next episode", "skip this song", "what's on tv tonight", "set an alarm for seven", "text my sister",
        "how many calories are in a banana", "what's the best credit card", "explain quantum physics",
        "should i learn python or java", "where's the nearest gas station", "is the pharmacy open",
        "what's a good book to read", "tell me a fun fact", "how do i lose weight", "translate this to french",
        "what year did the war end", "can you do my homework", "what's the exchange rate for euros",
        "who's playing tonight", "convert ten miles to kilometers", "draft a text to my landlord",

        "what's the weather tomorrow", "tell me a joke", "who won the game last night", "what's two plus two",
        "what's the capital of {place}", "set a timer for ten minutes", "play some music", "book me a flight",
        "what time is it", "who is the president", "how do i cook pasta", "translate hello to spanish",
        "what's the meaning of life", "write me a poem", "how tall is mount everest", "call my mom",
        "what's the news today", "how do i fix my car", "can you do my homework", "order me a pizza",
        "what's bitcoin worth", "recommend a movie", "how far is the moon", "are you a robot",
        "turn on the lights", "what's your favorite color", "help me with my taxes", "who made you",
        "how's traffic", "find a restaurant near me", "sing me a song", "what's the score",
    ),
    "human": (
        "let me talk to a person", "i want to speak to a human", "get me a real person", "agent please",
        "can i talk to customer service", "connect me to a representative", "transfer me to an agent",
        "is there a human i can talk to", "i need to speak with someone", "operator", "put me through to a person",
        "can a real person help me", "i'd rather talk to a human", "speak to a manager", "live agent",
        "i want a human not a bot", "can i chat with staff", "talk to someone please", "representative",
        "get me a human being", "can someone from the store call me", "i need a person to help me",
        "connect me with support", "human please", "let me speak to somebody",
    ),
    "complaint": (
        "my {cat} arrived damaged", "the zipper broke after a week", "you sent me the wrong size",
        "this is the worst service ever", "i'm really disappointed with my order", "my {cat} fell apart",
        "the color is totally different from the picture", "it never arrived", "i got charged twice",
        "the {cat} ripped the first time i wore it", "this is unacceptable", "the quality is terrible",
        "my order was missing an item", "the {cat} smells weird", "i've been waiting for weeks", "you people are useless",
        "the headphones stopped working", "the sole came off my {cat}", "i'm not happy with this",
        "the {cat} shrank in the wash", "the delivery guy was rude", "the box was crushed", "this is ridiculous",
        "i want to complain", "my package was left in the rain", "it's nothing like the description",
        "the stitching is coming undone", "i was overcharged", "the website keeps crashing", "the {cat} is faded",
    ),
}

HANDWRITTEN: tuple[tuple[str, str, dict[str, Any] | None], ...] = (
    ("hey can you help me find something", "search", None),
    ("i need new shoes", "search", None),
    ("what do you have for rainy days", "search", None),
    ("show me everything in navy", "search", None),
    ("nah too pricey", "refine", {"products_shown": 5}),
    ("in black maybe", "refine", {"products_shown": 4}),
    ("what about the {brand} ones", "refine", {"products_shown": 5}),
    ("the third one but in large", "refine", {"products_shown": 5}),
    ("yes that one please", "add_to_cart", {"products_shown": 3}),
    ("how about these", "photo_lookup", {"has_photo": True}),
    ("is this available", "photo_lookup", {"has_photo": True}),
    ("what brand is this", "photo_lookup", {"has_photo": True}),
    ("are they the same", "compare", {"products_shown": 2}),
    ("which is the comfier one", "compare", {"products_shown": 3}),
    ("does it come in other sizes", "product_question", {"products_shown": 1}),
    ("how's the sizing", "product_question", {"products_shown": 2}),
    ("where's my hoodie i ordered", "order_status", None),
    ("it's been a week where's my package", "order_status", None),
    ("can i send it back", "policy", None),
    ("what do i do if it doesn't fit", "policy", None),
    ("what's hot this season", "recommendation", None),
    ("something my teenage son would like", "recommendation", None),
    ("thank you that's all i needed", "greeting", None),
    ("bye bye", "greeting", None),
    ("how's it going", "greeting", None),
    ("what's the weather like in paris", "out_of_scope", None),
    ("can you help me with my math homework", "out_of_scope", None),
    ("blah blah", "out_of_scope", None),
    ("i don't want to talk to a robot", "human", None),
    ("give me your supervisor", "human", None),
    ("the shoes hurt my feet and fell apart", "complaint", None),
    ("this is so frustrating nothing works", "complaint", None),
)

ORDINALS = ("first", "second", "third", "last", "fourth")


@dataclass(frozen=True)
class Example:
    """One training utterance: text, intent and the screen context it was said in (None: nothing on screen)."""

    text: str
    intent: str
    context: dict[str, Any] | None = None


def _price(rng: random.Random) -> tuple[str, int]:
    value = rng.choice(tuple(_NUM_WORDS))
    spoken = _NUM_WORDS[value] if rng.random() < 0.5 else str(value)
    unit = rng.choice(("", " dollars", " bucks", ""))
    return (f"${value}" if rng.random() < 0.15 else spoken + unit), value


def _order_id(rng: random.Random) -> str:
    digits = f"{rng.randint(10000, 10999)}"
    style = rng.random()
    if style < 0.4:
        return f"ST-{digits}"
    if style < 0.7:
        return digits
    names = "zero one two three four five six seven eight nine".split()
    return "s t " + " ".join(names[int(d)] if d != "0" or rng.random() < 0.5 else "oh" for d in digits)


def _fill(template: str, rng: random.Random, words: CatalogWords | None = None) -> str:
    price, value = _price(rng)
    price2, _ = _price(rng)
    kinds = words.kinds if words is not None and words.kinds else CATEGORIES
    colours = words.colours if words is not None and words.colours else COLOURS
    brands = words.brands if words is not None and words.brands else BRANDS
    lines = words.lines if words is not None and words.lines else ("",)
    values = {
        "cat": rng.choice(kinds),
        "colour": rng.choice(colours),
        "colour2": rng.choice(colours),
        "size": rng.choice(SIZES),
        "brand": rng.choice(brands),
        "brand2": rng.choice(brands),

        "gender": rng.choice(GENDERS),
        "price": price,
        "price2": price2,
        "person": rng.choice(PEOPLE),
        "activity": rng.choice(ACTIVITIES),
        "adj": rng.choice(ADJECTIVES),
        "place": rng.choice(PLACES),
        "ordinal": rng.choice(ORDINALS),
        "ordinal2": rng.choice(ORDINALS),
        "n": rng.choice(("two", "2", "three", "3", "four", "a couple")),
        "order": _order_id(rng),
    }
    # Drawn only where a template uses them, so the generic utterances stay what they were (the evaluation sets
    # were checked against those).
    for key, pool in (("line", lines), ("line2", lines), ("adj_q", ADJ_QUESTIONS)):
        if "{" + key + "}" in template:
            values[key] = rng.choice(pool)
    return template.format(**values)


def _speechify(text: str, rng: random.Random) -> str:
    """Render a template the way speech comes out of a recogniser (case, punctuation, fillers vary)."""
    if rng.random() < 0.25:
        text = f"{rng.choice(FILLERS)} {text}"
    if rng.random() < 0.15:
        text = f"{text} please" if not text.endswith("please") else text
    if rng.random() < 0.6:
        text = re.sub(r"[^\w\s'$&-]", "", text.lower())
    elif rng.random() < 0.5:
        text = text[:1].upper() + text[1:] + rng.choice(("?", ".", ""))
    return " ".join(text.split())


def _context(intent: str, rng: random.Random) -> dict[str, Any] | None:
    """A plausible screen context for an utterance of `intent`."""
    if intent == "refine":
        return {"products_shown": rng.choice((3, 5, 8))}
    if intent in ("compare", "add_to_cart", "product_question"):
        return {"products_shown": rng.choice((2, 5))} if rng.random() < 0.8 else None
    if intent == "photo_lookup":
        return {"has_photo": True} if rng.random() < 0.5 else None
    return {"products_shown": 5} if rng.random() < 0.3 else None


@dataclass(frozen=True)
class CatalogWords:
    """The served catalog's own words for the templates: its kinds, product-line names, brands and colours.

    With them half of the generated utterances speak the served catalog's language ("is the Hera one warm enough",
    "compare the Karmen and the Cora pants") instead of only the generic shopping words above; none are written
    by hand for any catalog (`assistant.conversation.vocabulary.CatalogVocabulary` finds them).
    """

    kinds: tuple[str, ...]
    lines: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    colours: tuple[str, ...] = ()


# Templates that name a product of the catalog by its line ({line}, {line2}) and kind ({cat}).
NAMED_TEMPLATES: dict[str, tuple[str, ...]] = {
    "search": ("do you have the {line} {cat}", "show me the {line} {cat} in {colour}", "i'm looking for the {line}",
               "the {line} {cat} in {size} please", "do you still sell the {line} {cat}"),
    "product_question": ("is the {line} one {adj_q}", "what is the {line} {cat} made of", "tell me about the {line}",
                         "does the {line} come in {colour}", "what sizes does the {line} {cat} come in",
                         "is the {line} {cat} good for {activity}", "how much is the {line}"),
    "compare": ("compare the {line} and the {line2}", "which is better the {line} or the {line2}",
                "what's the difference between the {line} {cat} and the {line2} {cat}",
                "{line} or {line2}, which one is {adj}"),
    "add_to_cart": ("add the {line} {cat} to my cart", "i'll take the {line} in {size}",
                    "put the {line} in my basket", "buy the {line} {cat}"),
}
ADJ_QUESTIONS = ("warm enough for winter", "waterproof", "good for running", "comfortable", "stretchy",
                 "true to size", "breathable", "heavy")


def training_examples(seed: int = 0, per_intent: int = PER_INTENT,
                      words: CatalogWords | None = None) -> list[Example]:
    """The generated and hand-written training utterances (deterministic for a seed).

    Args:
        seed: Random seed for the fillers.
        per_intent: Generated utterances per intent, before de-duplication.
        words: The served catalog's words: with them, half of each intent's generated utterances use the
            catalog's kinds, brands and colours, and product-naming templates use its product lines.

    Returns:
        Examples in a stable order, no (text, context) pair twice.
    """
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    out: list[Example] = []

    def add(text: str, intent: str, context: dict[str, Any] | None) -> None:
        key = (text.lower(), repr(sorted((context or {}).items())))
        if key not in seen:
            seen.add(key)
            out.append(Example(text, intent, context))

    for intent, templates in TEMPLATES.items():
        for template in templates:  # every template at least once
            add(_speechify(_fill(template, rng), rng), intent, _context(intent, rng))
        for i in range(per_intent - len(templates)):
            own = words is not None and i % 2 == 1  # every other one in the served catalog's words
            add(_speechify(_fill(rng.choice(templates), rng, words if own else None), rng), intent,
                _context(intent, rng))
    if words is not None and words.lines:
        for intent, templates in NAMED_TEMPLATES.items():
            for _ in range(per_intent // 3):
                add(_speechify(_fill(rng.choice(templates), rng, words), rng), intent, _context(intent, rng))
    for text, intent, context in HANDWRITTEN:
        add(_fill(text, rng), intent, context)
    return out
