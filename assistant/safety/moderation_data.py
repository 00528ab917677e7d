"""Hand-written training utterances for the moderation classifier (`assistant.safety.moderation`).

Each row is ``(text, sentiment, frustrated, abusive, unsafe)`` with sentiment ``neg``/``neu``/``pos`` and 0/1 flags.
They are what a shopper might say to a voice shopping assistant, written for this project; the evaluation set
(``bench/data/moderation_eval.jsonl``) and the test utterances are different sentences.
"""

from __future__ import annotations

Row = tuple[str, str, int, int, int]

NEUTRAL: list[Row] = [
    (t, "neu", 0, 0, 0)
    for t in (
        "show me black hoodies",
        "i need running shoes in size ten",
        "do you have this jacket in navy",
        "what's the cheapest backpack you sell",
        "find me a waterproof rain jacket under a hundred dollars",
        "are these jeans stretchy",
        "i'm looking for a gift for my dad",
        "what colors does the trucker hat come in",
        "can you compare these two water bottles",
        "show me something similar but cheaper",
        "how much is the alpine down jacket",
        "add the grey one to my cart",
        "what sizes are left in the cove pullover",
        "where is my order",
        "can i check the status of order ST-10421",
        "how long does shipping take",
        "what is your return policy",
        "do you ship to canada",
        "which boots are good for hiking",
        "i need socks for running",
        "tell me more about the second one",
        "what's the difference between slim and straight fit",
        "is this hoodie machine washable",
        "do you have headphones with a long battery life",
        "show me dresses for a summer wedding",
        "i want to return my order",
        "can i pay with paypal",
        "next page please",
        "sort by price low to high",
        "the first one",
        "what material is the sherpa hoodie",
        "do you have kids sizes",
        "i'll take the medium",
        "is there a discount code",
        "find a backpack that fits a fifteen inch laptop",
        "are the boots true to size",
        "how do i exchange for a bigger size",
        "show me red sneakers",
        "what's in my cart",
        "remove the hat from my cart",
        "i need a warm jacket for a ski trip",
        "what's a good bottle for cold drinks",
        "let me see the white t-shirts",
        "how do i wash the down jacket",
        "can you read me the description",
        "okay",
        "hmm let me think",
        "what about in blue",
        "is it in stock",
        "when will order ST-10419 arrive",
    )
]

POSITIVE: list[Row] = [
    (t, "pos", 0, 0, 0)
    for t in (
        "thanks, that's exactly what i wanted",
        "perfect, i love it",
        "great, that was really helpful",
        "awesome, add it to my cart",
        "these boots look amazing",
        "wow that was fast, thank you",
        "you're a lifesaver, thanks",
        "i love the color of that hoodie",
        "the jacket i got last month is fantastic",
        "nice, that's a great price",
        "this is so easy, thanks a lot",
        "my order arrived early, great job",
        "i'm really happy with the jeans",
        "excellent recommendation",
        "that's a beautiful dress",
        "cool, thanks for the help",
        "super helpful, appreciate it",
        "the headphones sound incredible",
        "yes, that one is perfect",
        "i'm so glad you had my size",
        "best shopping experience i've had online",
        "these socks are so comfy, i want more",
        "you guys are great",
        "brilliant, that's sorted then",
        "love it, thank you so much",
        "fantastic service as always",
        "the fit is spot on",
        "that's really kind, thanks",
    )
]

NEGATIVE: list[Row] = [
    (t, "neg", 0, 0, 0)
    for t in (
        "the hoodie i got was a bit too small",
        "i don't really like that color",
        "that's more than i wanted to spend",
        "the shoes were uncomfortable so i want to send them back",
        "unfortunately the jacket isn't warm enough",
        "i'm a little disappointed with the quality",
        "the jeans faded after one wash",
        "that's too expensive for me",
        "the zipper broke on my backpack",
        "not a fan of that style",
        "the bottle leaks a bit",
        "my package arrived damaged",
        "sadly it doesn't fit",
        "the headphones stopped working after a week",
        "hmm, those are not great",
        "i was hoping for something nicer",
        "the dress looked different in the photo",
        "it's a shame it's sold out",
        "the boots gave me blisters",
        "i'm not happy with the stitching",
    )
]

FRUSTRATED: list[Row] = [
    (t, "neg", 1, 0, 0)
    for t in (
        "this is the third time i'm asking about my order",
        "why is my order still not here",
        "you keep showing me the wrong shoes",
        "this is useless",
        "how many times do i have to say it, size ten",
        "i've been waiting two weeks and nothing",
        "that's not what i asked for at all",
        "seriously? again?",
        "nobody has answered my emails",
        "i already told you i want the black one",
        "this is ridiculous, where is my refund",
        "what a waste of my time",
        "i'm so fed up with this",
        "can i just talk to a real person please",
        "you're not listening to me",
        "WHERE IS MY PACKAGE",
        "this is the worst service ever",
        "are you kidding me, it's broken again",
        "i've asked you five times now",
        "no no no, that's wrong",
        "forget it, this isn't working",
        "ugh, this assistant never understands me",
        "the tracking hasn't moved in ten days, unbelievable",
        "i want my money back now!!!",
        "why is this so hard",
        "you charged me twice and nobody cares",
        "still no refund after a month, i'm done",
        "stop showing me hats, i asked for boots",
        "this is so frustrating",
        "i give up",
        "for the last time, cancel my order",
        "this app is completely pointless",
        "every single time something goes wrong",
        "you guys lost my package again",
        "I SAID NAVY NOT BLUE",
        "honestly this is a joke",
        "i'm going to sue you if my refund doesn't come",
        "i'll leave a one star review everywhere",
        "i'm reporting you to the better business bureau",
        "i will never shop here again",
        "i'll dispute the charge with my bank",
    )
]

ABUSIVE: list[Row] = [
    (t, "neg", 1, 1, 0)
    for t in (
        "you're a stupid machine",
        "shut up you idiot",
        "what kind of moron designed this",
        "you are the dumbest bot ever",
        "screw you and your store",
        "go to hell",
        "fuck this stupid app",
        "you useless piece of shit",
        "are you an idiot or what",
        "what the fuck is wrong with you",
        "this shitty bot is worthless",
        "shut your mouth",
        "you're pathetic",
        "get lost you dumb robot",
        "fuck off",
        "you brainless bitch",
        "eat shit",
        "i hate you, you're garbage",
        "listen here you moron",
        "your company is run by idiots",
        "stupid ass assistant",
        "fucking answer me",
        "you're a worthless piece of junk",
        "damn you idiot bot",
    )
]

UNSAFE: list[Row] = [
    ("i'm going to kill you", "neg", 1, 1, 1),
    ("i know where your warehouse is and i'll burn it down", "neg", 1, 1, 1),
    ("someone should shoot the people who run this company", "neg", 1, 1, 1),
    ("i'll come to your office and hurt someone", "neg", 1, 1, 1),
    ("i'm going to blow up your store", "neg", 1, 1, 1),
    ("watch your back", "neg", 1, 1, 1),
    ("i will find you and make you pay", "neg", 1, 1, 1),
    ("your staff deserve to get beaten up", "neg", 1, 1, 1),
    ("i want to kill myself", "neg", 0, 0, 1),
    ("i don't want to live anymore", "neg", 0, 0, 1),
    ("i've been thinking about ending my life", "neg", 0, 0, 1),
    ("sometimes i want to hurt myself", "neg", 0, 0, 1),
    ("what's the best way to end it all", "neg", 0, 0, 1),
    ("i feel like everyone would be better off without me", "neg", 0, 0, 1),
    ("there's no point in going on", "neg", 0, 0, 1),
    ("i just want to disappear forever", "neg", 0, 0, 1),
    ("i've been cutting myself again", "neg", 0, 0, 1),
    ("i'm thinking about suicide", "neg", 0, 0, 1),
]

# Phrases that sound violent or rude but are ordinary shopping talk: taught as neutral or positive.
HARD_NEGATIVES: list[Row] = [
    ("that jacket is a killer deal", "pos", 0, 0, 0),
    ("show me bomber jackets", "neu", 0, 0, 0),
    ("this dress is to die for", "pos", 0, 0, 0),
    ("i need shoes that won't kill my feet", "neu", 0, 0, 0),
    ("boots that can survive a beating on the trail", "neu", 0, 0, 0),
    ("i want something to shoot photos in the snow", "neu", 0, 0, 0),
    ("a hoodie that's dead simple and warm", "neu", 0, 0, 0),
    ("do you have anything in shocking pink", "neu", 0, 0, 0),
    ("show me the slim fit jeans that hug the hips", "neu", 0, 0, 0),
    ("i'm dying to try these on", "pos", 0, 0, 0),
    ("my son destroys his sneakers, need tough ones", "neu", 0, 0, 0),
    ("cut the price filter at fifty", "neu", 0, 0, 0),
]

TRAINING_ROWS: list[Row] = NEUTRAL + POSITIVE + NEGATIVE + FRUSTRATED + ABUSIVE + UNSAFE + HARD_NEGATIVES
