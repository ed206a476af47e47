"""A small fictional world that the bundled ``sftviz-tiny`` model knows about.

A build-time module, not part of the installed package: ``scripts/build_tiny_model.py`` uses it to
make the pretraining corpus and the bundled data files in ``sftviz/assets/data/``, and
``tests/test_tiny_model.py`` uses it to check that those files are what it makes. Nothing in
``sftviz`` imports it at run time (the wheel ships the files it made, not the generator). Import it
with ``scripts/`` on ``sys.path``: ``import world as W``.

Everything here is plain Python (standard library only) and deterministic: every function that
makes a random choice takes an explicit ``seed`` and draws from its own ``random.Random(seed)``,
never from the global random state.

The world is a made-up shop, **Nimbus Home**, with forty products. Each product has a price (in
dollars), a colour, a battery life (in hours) and a warranty (in years). There are also a few
shop-wide support facts and about a hundred simple general facts (capitals, days, months,
colours of things, small sums, opposites).

The same world feeds three kinds of text, each made by its own function:

* :func:`pretraining_corpus` -- short prose documents stating one to three facts each, in several
  phrasings. This is what the tiny model is pretrained on. It never uses the question/answer
  format of the fine-tuning data.
* :func:`heldout_statements` -- fill-in-the-blank checks of what the model knows, written with
  *eval-only* sentence templates that never occur in the pretraining corpus, so they test the fact
  rather than a memorised string.
* :func:`support_pairs` and :func:`support_chat` -- supervised fine-tuning data: a fixed support
  instruction plus a customer question (the prompt) and a short answer (the completion), or the
  same knowledge as chat messages.

Products are split with :func:`split_products`: fine-tuning data for the training split uses the
first thirty products, the evaluation split uses the other ten, whose facts the model saw only in
pretraining prose. A model that answers questions about them after fine-tuning learned the *format*
from SFT and took the *knowledge* from pretraining.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = [
    "ATTRIBUTES",
    "COMPANY",
    "INSTRUCTION",
    "SYSTEM_PROMPT",
    "Product",
    "World",
    "answer_text",
    "heldout_corpus",
    "heldout_statements",
    "make_prompt",
    "make_world",
    "pretraining_corpus",
    "split_products",
    "support_chat",
    "support_pairs",
]

COMPANY = "Nimbus Home"

#: System message of the chat data, and first line of every support prompt.
SYSTEM_PROMPT = f"You are the {COMPANY} support assistant. Answer the customer's question in a few words."

#: The fixed prompt prefix of every prompt/completion pair (a question and "Assistant:" follow).
INSTRUCTION = SYSTEM_PROMPT + "\nCustomer: "

#: The four per-product attributes, in a fixed order.
ATTRIBUTES = ("price", "colour", "battery", "warranty")

_FIRST_WORDS = [
    "Zephyr",
    "Aurora",
    "Cobalt",
    "Ember",
    "Falcon",
    "Glacier",
    "Harbor",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Maple",
    "Nova",
    "Orbit",
    "Pebble",
    "Quartz",
    "Raven",
    "Sierra",
    "Tundra",
    "Vesper",
    "Willow",
    "Yarrow",
    "Zenith",
    "Breeze",
    "Cedar",
    "Drift",
    "Echo",
    "Flint",
    "Grove",
    "Halo",
    "Jasper",
    "Lark",
    "Meadow",
    "Opal",
    "Ripple",
    "Sable",
    "Thistle",
    "Boulder",
    "Comet",
    "Dune",
    "Fern",
    "Heron",
    "Marble",
]
_KINDS = [
    "Kettle",
    "Lamp",
    "Fan",
    "Heater",
    "Speaker",
    "Blender",
    "Toaster",
    "Clock",
    "Vacuum",
    "Radio",
    "Humidifier",
    "Purifier",
    "Mixer",
    "Camera",
    "Router",
    "Charger",
    "Scale",
    "Grinder",
    "Projector",
    "Doorbell",
]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "teal", "orange"]
PRICES = [19, 25, 29, 35, 39, 45, 49, 59, 69, 79, 89, 99, 119, 149, 199]
BATTERY_HOURS = [2, 4, 6, 8, 10, 12, 16, 24]
WARRANTY_YEARS = [1, 2, 3, 4, 5]

#: Shop-wide facts (name -> value); stated in pretraining prose only.
SHOP_FACTS = {"return_days": 30, "open_hour": 9, "free_shipping": 50, "founded": 1998}


@dataclass(frozen=True)
class Product:
    """One product of the shop and its four facts."""

    name: str  # two words, e.g. "Zephyr Kettle"
    price: int  # dollars
    colour: str  # one of COLOURS
    battery: int  # hours on one charge
    warranty: int  # years


@dataclass(frozen=True)
class World:
    """The whole fictional world: products, shop facts and general facts.

    ``general_facts`` is a list of ``(kind, subject, value)`` triples, e.g.
    ``("capital", "France", "Paris")`` or ``("sum", "two plus three", "five")``.
    """

    seed: int
    company: str
    products: list[Product]
    shop: dict[str, int]
    general_facts: list[tuple[str, str, str]] = field(default_factory=list)

    def product(self, name: str) -> Product:
        """Return the product called ``name`` (raises ``KeyError`` if there is none)."""
        for p in self.products:
            if p.name == name:
                return p
        raise KeyError(f"no product called {name!r}")


# ---------------------------------------------------------------------------------------------
# General facts (fixed lists; the seed only shuffles how often and how they are phrased)
# ---------------------------------------------------------------------------------------------

_CAPITALS = [
    ("France", "Paris"),
    ("Spain", "Madrid"),
    ("Italy", "Rome"),
    ("Germany", "Berlin"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Canada", "Ottawa"),
    ("Norway", "Oslo"),
    ("Greece", "Athens"),
    ("Portugal", "Lisbon"),
    ("Ireland", "Dublin"),
    ("Poland", "Warsaw"),
    ("Austria", "Vienna"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("Chile", "Santiago"),
    ("Cuba", "Havana"),
    ("Sweden", "Stockholm"),
    ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"),
    ("Hungary", "Budapest"),
    ("Belgium", "Brussels"),
    ("Turkey", "Ankara"),
    ("Thailand", "Bangkok"),
    ("Australia", "Canberra"),
    ("Ghana", "Accra"),
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_THING_COLOURS = [
    ("the sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("coal", "black"),
    ("a banana", "yellow"),
    ("a tomato", "red"),
    ("a lemon", "yellow"),
    ("a cherry", "red"),
    ("milk", "white"),
    ("a leaf", "green"),
    ("the sea", "blue"),
    ("a carrot", "orange"),
    ("chocolate", "brown"),
    ("a crow", "black"),
]
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_OPPOSITES = [
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("day", "night"),
    ("fast", "slow"),
    ("open", "closed"),
    ("full", "empty"),
    ("light", "dark"),
    ("early", "late"),
    ("wet", "dry"),
    ("loud", "quiet"),
    ("high", "low"),
]


def _general_facts() -> list[tuple[str, str, str]]:
    """The ~100 general facts as ``(kind, subject, value)`` triples, in a fixed order."""
    facts = [("capital", c, city) for c, city in _CAPITALS]
    facts += [("day", d, _DAYS[(i + 1) % 7]) for i, d in enumerate(_DAYS)]
    facts += [("month", m, _MONTHS[(i + 1) % 12]) for i, m in enumerate(_MONTHS)]
    facts += [("thing_colour", t, c) for t, c in _THING_COLOURS]
    facts += [
        ("sum", f"{_NUMBER_WORDS[a]} plus {_NUMBER_WORDS[b]}", _NUMBER_WORDS[a + b])
        for a in range(1, 6)
        for b in range(1, 6)
    ]
    facts += [("opposite", a, b) for a, b in _OPPOSITES]
    return facts


def make_world(seed: int = 0) -> World:
    """Make the fictional world: 40 products with random facts drawn with ``random.Random(seed)``.

    Product names pair 40 distinct first words with product kinds; prices, colours, battery hours
    and warranty years are drawn from small fixed sets so that a tiny model can learn them.
    """
    rng = random.Random(seed)
    first = rng.sample(_FIRST_WORDS, 40)
    products = []
    for word in first:
        products.append(
            Product(
                name=f"{word} {rng.choice(_KINDS)}",
                price=rng.choice(PRICES),
                colour=rng.choice(COLOURS),
                battery=rng.choice(BATTERY_HOURS),
                warranty=rng.choice(WARRANTY_YEARS),
            )
        )
    return World(seed=seed, company=COMPANY, products=products, shop=dict(SHOP_FACTS), general_facts=_general_facts())


def split_products(world: World, n_train: int = 30) -> tuple[list[Product], list[Product]]:
    """Split the products into (train, eval): the first ``n_train`` and the rest."""
    return list(world.products[:n_train]), list(world.products[n_train:])


# ---------------------------------------------------------------------------------------------
# Phrasing templates
# ---------------------------------------------------------------------------------------------
# ``{n}`` is the product name, ``{v}`` the value as it is written in text ("49", "teal", ...),
# ``{u}`` the unit word that agrees with the value ("hours"/"hour", "years"/"year").
# Pretraining templates are full sentences. Eval templates are split into a context and a
# continuation; they are never used in the pretraining corpus.

_PRETRAIN_TEMPLATES = {
    "price": [
        "The {n} costs {v} dollars.",
        "The {n} sells for {v} dollars.",
        "You can buy the {n} for {v} dollars.",
        "At {v} dollars, the {n} is one of our products.",
        "The {n} is priced at {v} dollars.",
        "If a customer asks about the price of the {n}, it is {v} dollars.",
    ],
    "colour": [
        "The {n} comes in {v}.",
        "The {n} is {v}.",
        "You can buy the {n} in {v}.",
        "Every {n} is painted {v}.",
        "The {v} {n} is a popular product.",
        "If a customer asks about the colour of the {n}, it is {v}.",
    ],
    "battery": [
        "The {n} runs for {v} {u} on one charge.",
        "The battery of the {n} lasts {v} {u}.",
        "With a full battery, the {n} works for {v} {u}.",
        "The {n} has a battery life of {v} {u}.",
        "If a customer asks about the battery of the {n}, it lasts {v} {u}.",
    ],
    "warranty": [
        "The {n} comes with a {v} year warranty.",
        "The {n} is covered by our warranty for {v} {u}.",
        "{company} repairs the {n} for free for {v} {u}.",
        "The {n} has a warranty of {v} {u}.",
        "If a customer asks about the warranty of the {n}, it lasts {v} {u}.",
    ],
}

#: Follow-up sentences about the same product in a multi-fact document ("It costs ...").
_PRONOUN_TEMPLATES = {
    "price": ["It costs {v} dollars.", "It sells for {v} dollars."],
    "colour": ["It comes in {v}.", "It is {v}."],
    "battery": ["Its battery lasts {v} {u}.", "It runs for {v} {u} on one charge."],
    "warranty": ["It comes with a {v} year warranty.", "Its warranty lasts {v} {u}."],
}

#: Two facts in one sentence: (attribute a, attribute b, template with {a} and {b} and units).
_PAIR_TEMPLATES = [
    ("price", "colour", "Priced at {price} dollars, the {n} comes in {colour}."),
    ("colour", "price", "The {colour} {n} costs {price} dollars."),
    ("colour", "battery", "The {n} comes in {colour} and runs for {battery} {battery_u} on one charge."),
    ("price", "warranty", "The {n} costs {price} dollars and comes with a {warranty} year warranty."),
    ("battery", "warranty", "The {n} runs for {battery} {battery_u} and is covered for {warranty} {warranty_u}."),
]

#: Eval-only templates: (context, continuation). Paraphrases of the pretraining templates (other
#: wording or word order) that never occur in the pretraining corpus.
_EVAL_TEMPLATES = {
    "price": ("The price of the {n} is", " {v} dollars."),
    "colour": ("The colour of the {n} is", " {v}."),
    "battery": ("On one charge, the {n} runs for", " {v} {u}."),
    "warranty": ("The warranty for the {n} lasts", " {v} {u}."),
}

_SHOP_TEMPLATES = {
    "return_days": [
        "{company} accepts returns within {v} days.",
        "You can return anything bought from {company} within {v} days.",
        "Customers of {company} have {v} days to return a product.",
    ],
    "open_hour": ["{company} stores open at {v} in the morning.", "Every {company} store opens at {v} in the morning."],
    "free_shipping": [
        "{company} ships for free on orders over {v} dollars.",
        "Orders over {v} dollars ship for free from {company}.",
    ],
    "founded": ["{company} was founded in {v}.", "{company} started selling home products in {v}."],
}
_SHOP_EVAL = {
    "return_days": ("{company} takes returns within", " {v} days."),
    "open_hour": ("The stores of {company} open at", " {v} in the morning."),
    "free_shipping": ("{company} offers free shipping on orders over", " {v} dollars."),
    "founded": ("{company} was started in", " {v}."),
}

#: General prose about the support service (gives the tokenizer and the model the words of the
#: support instruction; statements only, never a question followed by an answer).
_SUPPORT_SENTENCES = [
    "The {company} support assistant answers every customer question in a few words.",
    "Customers ask the support assistant how much a product costs and what colour it comes in.",
    "A customer who wants to know how long a battery lasts can ask the support assistant.",
    "The assistant answers questions about the price, the colour, the battery and the warranty of every product.",
    "Many customers want to know how many hours a product runs on one charge.",
    "Some customers ask how many years of warranty a product has.",
    "You are welcome to ask the support assistant about any product.",
    "Customers can ask which colour a product comes in.",
    "Customer questions are answered by the {company} support assistant.",
    "Assistant answers are short and friendly.",
    "The answer to a question about a price is a number of dollars.",
    "You can ask what the price of a product is before you buy it.",
    "Customers often want to know how much a product is and which colour they can get it in.",
    "How much a product costs is the question customers ask most.",
    "Answer every question politely: that is what the support assistant does.",
    "How long a battery lasts matters to many customers.",
]

_GENERAL_TEMPLATES = {
    "capital": ["The capital of {s} is {v}.", "{v} is the capital of {s}.", "{s} has its capital in {v}."],
    "day": ["The day after {s} is {v}.", "{v} comes after {s}.", "After {s} comes {v}."],
    "month": ["The month after {s} is {v}.", "{v} comes after {s}.", "After {s} comes {v}."],
    "thing_colour": ["The colour of {s} is {v}.", "{S} is {v}.", "Most of the time {s} is {v}."],
    "sum": ["{S} is {v}.", "{S} makes {v}.", "If you add {s}, you get {v}."],
    "opposite": ["The opposite of {s} is {v}.", "{S} is the opposite of {v}."],
}
_GENERAL_EVAL = {
    "capital": ("The capital city of {s} is", " {v}."),
    "day": ("The next day after {s} is", " {v}."),
    "month": ("The next month after {s} is", " {v}."),
    "thing_colour": ("In most cases {s} is", " {v}."),
    "sum": ("Adding {s}, you get", " {v}."),
    "opposite": ("The opposite of the word {s} is", " {v}."),
}


def _value(product: Product, attribute: str) -> tuple[str, str]:
    """The value of ``attribute`` as written in text, and its unit word ('' if none)."""
    v = getattr(product, attribute)
    if attribute == "battery":
        return str(v), "hour" if v == 1 else "hours"
    if attribute == "warranty":
        return str(v), "year" if v == 1 else "years"
    return str(v), ""


def _fill(template: str, product: Product, attribute: str) -> str:
    v, u = _value(product, attribute)
    return template.format(n=product.name, v=v, u=u, company=COMPANY)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# ---------------------------------------------------------------------------------------------
# Pretraining prose
# ---------------------------------------------------------------------------------------------


def _product_document(rng: random.Random, p: Product) -> str:
    """One document about one product stating 1-3 of its facts."""
    n_facts = rng.choice([1, 1, 2, 2, 3])
    if n_facts >= 2 and rng.random() < 0.4:
        a, b, tmpl = rng.choice(_PAIR_TEMPLATES)
        va, ua = _value(p, a)
        vb, ub = _value(p, b)
        sentences = [tmpl.format(n=p.name, **{a: va, f"{a}_u": ua, b: vb, f"{b}_u": ub})]
        used = [a, b]
    else:
        first = rng.choice(ATTRIBUTES)
        sentences = [_fill(rng.choice(_PRETRAIN_TEMPLATES[first]), p, first)]
        used = [first]
    rest = [a for a in ATTRIBUTES if a not in used]
    rng.shuffle(rest)
    for a in rest[: max(0, n_facts - len(used))]:
        sentences.append(_fill(rng.choice(_PRONOUN_TEMPLATES[a]), p, a))
    return " ".join(sentences)


def _shop_document(rng: random.Random, world: World) -> str:
    key = rng.choice(sorted(world.shop))
    return rng.choice(_SHOP_TEMPLATES[key]).format(v=world.shop[key], company=world.company)


def _support_document(rng: random.Random, world: World) -> str:
    k = rng.choice([1, 1, 2])
    return " ".join(s.format(company=world.company) for s in rng.sample(_SUPPORT_SENTENCES, k))


def _general_sentence(rng: random.Random, fact: tuple[str, str, str]) -> str:
    kind, s, v = fact
    return rng.choice(_GENERAL_TEMPLATES[kind]).format(s=s, S=_cap(s), v=v)


def _general_document(rng: random.Random, world: World) -> str:
    """One to three general-fact sentences (random facts, not necessarily related)."""
    k = rng.choice([1, 1, 2, 3])
    return " ".join(_general_sentence(rng, rng.choice(world.general_facts)) for _ in range(k))


def pretraining_corpus(world: World, n_sentences: int = 40_000, seed: int = 0) -> list[str]:
    """Return ``n_sentences`` short prose documents (one string each) about the world.

    About 70% talk about a product (1-3 of its facts, several phrasings per fact, sometimes two
    facts in one sentence, follow-up sentences use "It ..."), 4% state a shop-wide fact, 4% describe
    the support service in general words (no product facts, no questions) and 22% state general
    facts. All forty products appear, whatever split the fine-tuning data uses. The
    eval-only templates of :func:`heldout_statements` and the question/answer format of the
    fine-tuning data never appear.
    """
    rng = random.Random(seed)
    docs = []
    for _ in range(n_sentences):
        r = rng.random()
        if r < 0.70:
            docs.append(_product_document(rng, rng.choice(world.products)))
        elif r < 0.74:
            docs.append(_shop_document(rng, world))
        elif r < 0.78:
            docs.append(_support_document(rng, world))
        else:
            docs.append(_general_document(rng, world))
    return docs


def heldout_corpus(world: World, n: int, seed: int, exclude: set[str] | list[str]) -> list[str]:
    """Documents from the pretraining distribution that are not in ``exclude`` (the training corpus).

    Drawn with :func:`pretraining_corpus` under another seed, dropping every document that also
    occurs in the training corpus, so the model is scored on text it did not train on. (Short
    one-fact documents are mostly duplicates of training ones, so the result leans a little
    towards the longer multi-fact documents.)
    """
    exclude = set(exclude)
    out: list[str] = []
    seen: set[str] = set()
    chunk = 0
    while len(out) < n:
        for doc in pretraining_corpus(world, 4 * n, seed=seed * 1000 + chunk):
            if doc not in exclude and doc not in seen:
                seen.add(doc)
                out.append(doc)
                if len(out) == n:
                    break
        chunk += 1
        if chunk > 50:
            raise ValueError("could not find enough held-out documents; lower n")
    return out


# ---------------------------------------------------------------------------------------------
# Held-out statements (knowledge probes)
# ---------------------------------------------------------------------------------------------


def heldout_statements(world: World, seed: int = 0, n_distractors: int = 5, include_general: bool = True) -> list[dict]:
    """Fill-in-the-blank knowledge probes written with eval-only templates.

    The eval templates paraphrase the pretraining ones ("On one charge, the X runs for" for "The X
    runs for 8 hours on one charge.") but never occur in the pretraining corpus, so a model has to
    know the fact, not a memorised string, to complete them.

    Each item is ``{"context", "true", "distractors", "kind", "subject"}``: a sentence start such as
    ``"The colour of the Zephyr Kettle is"``, the true continuation (``" teal."``, with a leading
    space) and up to ``n_distractors`` continuations of the same kind with other values. A model
    "knows" the fact when the true continuation is more likely than every distractor. There is one
    item per product and attribute, one per shop fact and (if ``include_general``) one per general
    fact.
    """
    rng = random.Random(seed)
    items = []

    def add(context: str, true_v: str, other_vs: list[str], cont: str, kind: str, subject: str, unit_for=lambda v: ""):
        others = [v for v in dict.fromkeys(other_vs) if v != true_v]
        rng.shuffle(others)
        items.append(
            {
                "context": context,
                "true": cont.format(v=true_v, u=unit_for(true_v)),
                "distractors": [cont.format(v=v, u=unit_for(v)) for v in others[:n_distractors]],
                "kind": kind,
                "subject": subject,
            }
        )

    units = {
        "battery": lambda v: "hour" if v == "1" else "hours",
        "warranty": lambda v: "year" if v == "1" else "years",
    }
    pools = {"price": PRICES, "colour": COLOURS, "battery": BATTERY_HOURS, "warranty": WARRANTY_YEARS}
    for p in world.products:
        for a in ATTRIBUTES:
            ctx, cont = _EVAL_TEMPLATES[a]
            add(
                ctx.format(n=p.name),
                _value(p, a)[0],
                [str(x) for x in pools[a]],
                cont,
                a,
                p.name,
                units.get(a, lambda v: ""),
            )
    shop_pools = {
        "return_days": [7, 14, 30, 60, 90],
        "open_hour": [6, 7, 8, 9, 10, 11],
        "free_shipping": [20, 25, 50, 75, 100],
        "founded": [1988, 1994, 1998, 2004, 2010],
    }
    for key, (ctx, cont) in _SHOP_EVAL.items():
        add(
            ctx.format(company=world.company),
            str(world.shop[key]),
            [str(x) for x in shop_pools[key]],
            cont,
            "shop",
            key,
        )
    if include_general:
        by_kind: dict[str, list[str]] = {}
        for kind, _, v in world.general_facts:
            by_kind.setdefault(kind, []).append(v)
        for kind, s, v in world.general_facts:
            ctx, cont = _GENERAL_EVAL[kind]
            add(ctx.format(s=s), v, by_kind[kind], cont, kind, s)
    return items


# ---------------------------------------------------------------------------------------------
# Fine-tuning data
# ---------------------------------------------------------------------------------------------

_QUESTIONS = {
    "price": ["How much does the {n} cost?", "What is the price of the {n}?", "How much is the {n}?"],
    "colour": ["What colour is the {n}?", "Which colour does the {n} come in?", "What colour can I get the {n} in?"],
    "battery": ["How long does the battery of the {n} last?", "How many hours does the {n} run on one charge?"],
    "warranty": ["How long is the warranty on the {n}?", "How many years of warranty does the {n} have?"],
}
_FOLLOW_UPS = {
    "price": ["And how much does it cost?", "What does it cost?"],
    "colour": ["Which colour is it?", "And what colour does it come in?"],
    "battery": ["How long does its battery last?", "And how many hours does it run?"],
    "warranty": ["How long is its warranty?", "And what warranty does it have?"],
}


def answer_text(product: Product, attribute: str) -> str:
    """The short answer for ``attribute`` of ``product``, without a leading space: '49 dollars.'"""
    v, u = _value(product, attribute)
    if attribute == "price":
        return f"{v} dollars."
    if attribute == "colour":
        return f"{v}."
    return f"{v} {u}."


def make_prompt(question: str) -> str:
    """The full SFT prompt for one customer question: instruction, question, 'Assistant:'."""
    return f"{INSTRUCTION}{question}\nAssistant:"


def support_pairs(world: World, products: list[Product], seed: int = 0, phrasings: int | None = None) -> list[dict]:
    """Prompt/completion pairs: a support instruction + a customer question -> a short answer.

    One pair per product, attribute and question phrasing (two or three phrasings per attribute),
    or ``phrasings`` randomly chosen phrasings per attribute if given (e.g. ``1`` for a compact eval
    split). The prompt ends with ``"Assistant:"``; the completion starts with a space, e.g.
    ``{"prompt": "You are ... Customer: How much does the Zephyr Kettle cost?\\nAssistant:",
    "completion": " 49 dollars."}``. Rows are shuffled with ``random.Random(seed)``.
    """
    rng = random.Random(seed)
    rows = []
    for p in products:
        for a in ATTRIBUTES:
            qs = list(_QUESTIONS[a])
            if phrasings is not None:
                qs = rng.sample(qs, min(phrasings, len(qs)))
            for q in qs:
                rows.append({"prompt": make_prompt(q.format(n=p.name)), "completion": " " + answer_text(p, a)})
    rng.shuffle(rows)
    return rows


def support_chat(world: World, products: list[Product], seed: int = 0, per_product: int = 2) -> list[dict]:
    """Chat conversations: a system message, then 1-3 user/assistant exchanges about one product.

    The first question names the product; follow-ups say "it". Assistant answers are the same
    short answers as in :func:`support_pairs` (without the leading space, since chat content starts
    right after the role token). ``per_product`` conversations per product, shuffled.
    """
    rng = random.Random(seed)
    convs = []
    for p in products:
        for _ in range(per_product):
            attrs = rng.sample(ATTRIBUTES, rng.choice([1, 2, 3]))
            messages = [{"role": "system", "content": SYSTEM_PROMPT}]
            for i, a in enumerate(attrs):
                if i == 0:
                    q = rng.choice(_QUESTIONS[a]).format(n=p.name)
                else:
                    q = rng.choice(_FOLLOW_UPS[a])
                messages.append({"role": "user", "content": q})
                messages.append({"role": "assistant", "content": _cap(answer_text(p, a))})
            convs.append({"messages": messages})
    rng.shuffle(convs)
    return convs


#: Short requests for a whole product description (the "explain" dataset's prompts).
_EXPLAIN_REQUESTS = [
    "Tell me about the {n}.",
    "What can you tell me about the {n}?",
    "Describe the {n}.",
]


def explain_text(product: Product) -> str:
    """A four-sentence description of ``product`` (its four facts in a fixed order), no leading space.

    The product is "it": the name is in the prompt only, so every fact has to be recalled for it.
    """
    parts = []
    for attribute in ATTRIBUTES:
        parts.append(_fill(_PRONOUN_TEMPLATES[attribute][0], product, attribute))
    return " ".join(parts)


def explain_pairs(world: World, products: list[Product], seed: int = 0, phrasings: int | None = None) -> list[dict]:
    """Prompt/completion pairs with short prompts and long completions: a request -> a description.

    The opposite shape of :func:`support_pairs`: the prompt is only the request
    (``"Customer: Tell me about the Zephyr Kettle.\\nAssistant:"``, no system instruction) and the
    completion states all four facts in four sentences. One pair per product and request phrasing
    (three), or ``phrasings`` randomly chosen ones per product. Shuffled with ``random.Random(seed)``.
    """
    rng = random.Random(seed)
    rows = []
    for p in products:
        requests = list(_EXPLAIN_REQUESTS)
        if phrasings is not None:
            requests = rng.sample(requests, min(phrasings, len(requests)))
        for r in requests:
            rows.append({"prompt": f"Customer: {r.format(n=p.name)}\nAssistant:", "completion": " " + explain_text(p)})
    rng.shuffle(rows)
    return rows
