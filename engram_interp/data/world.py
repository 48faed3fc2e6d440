"""A generated knowledge world in the style of "Physics of Language Models, Part 3.1" (bioS).

``World(seed, n_people)`` draws fictional people with multi-token names (first + middle + last,
from syllable-built pools of a few thousand each) and six attributes: birth date, birth city,
university, major, employer and the employer's city. Documents about them are rendered on the
fly from a seed (:meth:`World.doc`), in several TRAIN phrasings with shuffled sentence order,
pronouns and filler, so the stream never repeats. EVAL phrasings (:data:`EVAL_CLOZE`,
:data:`EVAL_QUESTIONS`) are disjoint from the train ones and are used only by the task suites.

Everything is a pure function of the seeds: ``World(0, 20000).doc(i, seed=s)`` is the same text
on every machine and in every process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

# --------------------------------------------------------------------------- attribute pools
CITIES = tuple(
    """New York|Los Angeles|Chicago|Houston|Philadelphia|San Francisco|Boston|Seattle|Denver|Atlanta|Miami|
Detroit|New Orleans|Salt Lake City|Kansas City|St. Louis|Baltimore|Pittsburgh|Cleveland|Minneapolis|Portland|
San Diego|Las Vegas|Nashville|Toronto|Montreal|Vancouver|Mexico City|Guadalajara|Havana|Bogota|Lima|Santiago|
Buenos Aires|Montevideo|Rio de Janeiro|Sao Paulo|Caracas|Quito|London|Manchester|Liverpool|Edinburgh|Glasgow|
Dublin|Cardiff|Paris|Lyon|Marseille|Brussels|Amsterdam|Rotterdam|Berlin|Hamburg|Munich|Frankfurt|Cologne|Vienna|
Zurich|Geneva|Milan|Rome|Naples|Florence|Venice|Madrid|Barcelona|Seville|Valencia|Lisbon|Porto|Copenhagen|Oslo|
Stockholm|Helsinki|Reykjavik|Warsaw|Krakow|Prague|Budapest|Bucharest|Sofia|Belgrade|Zagreb|Athens|Istanbul|Ankara|
Kyiv|Moscow|Saint Petersburg|Riga|Vilnius|Tallinn|Minsk|Tbilisi|Yerevan|Baku|Tehran|Baghdad|Beirut|Damascus|
Jerusalem|Amman|Riyadh|Dubai|Doha|Muscat|Karachi|Lahore|New Delhi|Mumbai|Kolkata|Chennai|Bangalore|Hyderabad|
Dhaka|Kathmandu|Colombo|Yangon|Bangkok|Hanoi|Ho Chi Minh City|Phnom Penh|Kuala Lumpur|Singapore|Jakarta|Manila|
Hong Kong|Shanghai|Beijing|Guangzhou|Shenzhen|Chengdu|Taipei|Seoul|Busan|Tokyo|Osaka|Kyoto|Nagoya|Sapporo|
Ulaanbaatar|Almaty|Tashkent|Cairo|Alexandria|Casablanca|Marrakesh|Tunis|Algiers|Lagos|Accra|Dakar|Nairobi|
Addis Ababa|Kampala|Dar es Salaam|Kinshasa|Luanda|Johannesburg|Cape Town|Durban|Harare|Lusaka|Sydney|Melbourne|
Brisbane|Perth|Adelaide|Auckland|Wellington|Christchurch|Honolulu|Anchorage|Quebec City|Winnipeg|Calgary|Ottawa|
Halifax|Edmonton|Tucson|Albuquerque|Sacramento|Oakland|Milwaukee|Cincinnati|Indianapolis|Columbus|Charlotte|
Richmond|Memphis|Louisville|Oklahoma City|Omaha|Dallas|Austin|San Antonio|El Paso|Phoenix""".replace("\n", "").split("|")
)

MAJORS = tuple(
    """mathematics|physics|chemistry|biology|computer science|economics|history|philosophy|linguistics|
psychology|sociology|anthropology|political science|law|medicine|nursing|architecture|civil engineering|
mechanical engineering|electrical engineering|chemical engineering|aerospace engineering|geology|astronomy|
statistics|music|fine arts|art history|classics|English literature|French literature|journalism|education|
business administration|accounting|finance|marketing|agriculture|forestry|oceanography|meteorology|
veterinary science|pharmacy|dentistry|public health|theology|urban planning|materials science|neuroscience|
biochemistry|genetics|ecology|film studies|theater|graphic design|communications|international relations|
nutrition|library science|geography""".replace("\n", "").split("|")
)

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")

_ONSETS = ("b", "br", "c", "ch", "d", "dr", "f", "fr", "g", "gr", "h", "j", "k", "kr", "l", "m", "n", "p", "pr",
           "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "z", "")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "io", "ou", "y", "ie")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "m", "x", "nd", "rt", "ck", "sk")
_UNI_KINDS = ("University", "Institute of Technology", "College", "State University", "Polytechnic")
_COMPANY_KINDS = ("Industries", "Systems", "Labs", "Holdings", "Group", "Logistics", "Energy", "Pharmaceuticals",
                  "Robotics", "Foods", "Motors", "Media", "Bank", "Software", "Airlines", "Textiles")


def syllable_word(rng: random.Random, n_syll: int) -> str:
    """A capitalized pseudo-word of ``n_syll`` onset-vowel-coda syllables (e.g. "Draventh")."""
    parts = []
    for i in range(n_syll):
        coda = rng.choice(_CODAS) if i == n_syll - 1 else rng.choice(_CODAS[:8])
        parts.append(rng.choice(_ONSETS) + rng.choice(_VOWELS) + coda)
    return "".join(parts).capitalize()


def word_pool(rng: random.Random, n: int, syllables: tuple[int, ...], exclude: frozenset[str] = frozenset()) -> list[str]:
    """``n`` distinct pseudo-words (not in ``exclude``), drawn in a deterministic order."""
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        w = syllable_word(rng, rng.choice(syllables))
        if len(w) >= 4 and w not in seen:
            seen.add(w)
            out.append(w)
    return out


@dataclass(frozen=True)
class Person:
    """One fictional person and their six attributes (PLM bioS)."""

    name: str  # "First Middle Last", multi-token
    gender: str  # "m" | "f"
    birth_date: str  # "March 4, 1961"
    birth_city: str
    university: str
    major: str
    employer: str
    work_city: str  # the employer's headquarters city (a function of the employer, as in bioS)

    @property
    def pronoun(self) -> str:
        return "he" if self.gender == "m" else "she"

    @property
    def possessive(self) -> str:
        return "his" if self.gender == "m" else "her"

    @property
    def obj(self) -> str:
        return "him" if self.gender == "m" else "her"


ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "employer", "work_city")

# TRAIN phrasings: a full sentence per attribute; {s} is the subject (name or pronoun).
TRAIN_SENTENCES: dict[str, tuple[str, ...]] = {
    "birth_date": ("{s} was born on {v}.", "{s} came into this world on {v}.", "{S} birthday is {v}.",
                   "{s} celebrates {p} birthday on {v_md} every year, having been born in {v_y}.",
                   "{v} is the date on which {s} was born."),
    "birth_city": ("{s} was born in {v}.", "{s} was born and raised in {v}.", "{s} grew up in {v}.",
                   "{v} is the birthplace of {s}.", "{s} spent {p} childhood in {v}."),
    "university": ("{s} studied at {v}.", "{s} graduated from {v}.", "{s} received {p} degree from {v}.",
                   "{s} attended {v}.", "{v} is where {s} completed {p} education."),
    "major": ("{s} majored in {v}.", "{s} studied {v} at university.", "{s} earned a degree in {v}.",
              "{s} focused on {v} during {p} studies.", "{s} specialized in {v} in college."),
    "employer": ("{s} works for {v}.", "{s} is employed by {v}.", "{s} has a job at {v}.",
                 "{v} employs {s}.", "{s} built {p} career at {v}."),
    "work_city": ("{s} works in {v}.", "{s} lives and works in {v}.", "{s} moved to {v} for work.",
                  "{s} commutes to an office in {v}.", "{v} is where {s} works today."),
}

# TRAIN questions (open-book passages and closed-book QA lines): "Question: ...\nAnswer: {v}".
TRAIN_QUESTIONS: dict[str, tuple[str, ...]] = {
    "birth_date": ("When was {n} born?", "What is the birth date of {n}?"),
    "birth_city": ("Where was {n} born?", "Which city was {n} born in?"),
    "university": ("Which university did {n} attend?", "Where did {n} study?"),
    "major": ("What did {n} study?", "What was the major of {n}?"),
    "employer": ("Which company does {n} work for?", "Who employs {n}?"),
    "work_city": ("Where does {n} work?", "In which city does {n} work?"),
}

# EVAL (held-out) phrasings: never rendered into training documents. Cloze prompts end right
# before the value; question prompts end with "Answer:" and the value follows after a space.
EVAL_CLOZE: dict[str, tuple[str, ...]] = {
    "birth_date": ("The records list the date of birth of {n} as",),
    "birth_city": ("The hometown listed for {n} on official records is",),
    "university": ("The alma mater of {n} is",),
    "major": ("The academic field in which {n} holds a degree is",),
    "employer": ("The current employer of {n} is",),
    "work_city": ("The city where {n} goes to work each day is",),
}
EVAL_QUESTIONS: dict[str, tuple[str, ...]] = {
    "birth_date": ("On what date did {n} enter the world?",),
    "birth_city": ("In what city did {n} first see the light of day?",),
    "university": ("From which institution did {n} obtain a degree?",),
    "major": ("Which subject did {n} choose to specialize in?",),
    "employer": ("What organization pays the salary of {n}?",),
    "work_city": ("In what city is the workplace of {n}?",),
}

FILLER = ("{S} friends describe {o} as patient and curious.", "{s} enjoys long walks on weekends.",
          "{s} has a keen interest in old maps.", "{s} is known for a dry sense of humor.",
          "In {p} spare time, {s} plays the piano.", "{s} keeps a small garden.",
          "Colleagues say {s} is a careful listener.", "{s} once ran a marathon.",
          "{s} collects postage stamps.", "{s} speaks three languages.", "{s} volunteers at a local library.",
          "{s} prefers tea to coffee.", "{s} likes to cook for friends.", "{s} rarely misses a chess club meeting.")


def _cap(s: str) -> str:
    return s[0].upper() + s[1:] if s else s


def render_sentence(template: str, person: Person, value: str, use_pronoun: bool = False) -> str:
    """Fill one TRAIN/filler template. ``{s}``: subject, ``{S}``: subject's possessive form,
    ``{p}``/``{o}``: possessive/object pronoun, ``{v}``: value (``{v_md}``/``{v_y}``: date parts).

    The subject is the full name, or the pronoun when ``use_pronoun`` and the template opens
    with the subject (a pronoun never stands in object position: "the birthplace of he").
    """
    pronoun = use_pronoun and template.startswith(("{s}", "{S}"))
    subject = person.pronoun if pronoun else person.name
    subj_poss = person.possessive if pronoun else f"{person.name}'s"
    md, _, y = value.rpartition(", ")
    text = template.format(s=subject, S=subj_poss, p=person.possessive, o=person.obj, v=value, v_md=md or value, v_y=y)
    return _cap(text)


DEFAULT_PEOPLE = 20000  # world size of `data tokenize` / `data suites`: the world the committed suites are built for


class World:
    """The fictional population: ``World(seed, n_people).people[i]`` is a :class:`Person`."""

    def __init__(self, seed: int = 0, n_people: int = 20000):
        self.seed = seed
        self.n_people = n_people

    @cached_property
    def pools(self) -> dict[str, list[str]]:
        """Name pools (first/middle/last) and the universities/companies of this world."""
        rng = random.Random(f"world-pools:{self.seed}")
        first = word_pool(rng, 1500, (2,))
        middle = word_pool(rng, 1500, (1, 2), frozenset(first))
        last = word_pool(rng, 3000, (2, 2, 3), frozenset(first) | frozenset(middle))
        uni_names = word_pool(rng, 300, (2, 3), frozenset(first) | frozenset(middle) | frozenset(last))
        co_names = word_pool(rng, 600, (2, 3), frozenset(first) | frozenset(middle) | frozenset(last) | frozenset(uni_names))
        universities = [f"{n} {rng.choice(_UNI_KINDS)}" for n in uni_names]
        companies = [f"{n} {rng.choice(_COMPANY_KINDS)}" for n in co_names]
        return {"first": first, "middle": middle, "last": last, "universities": universities, "companies": companies}

    @cached_property
    def company_city(self) -> dict[str, str]:
        rng = random.Random(f"world-hq:{self.seed}")
        return {c: rng.choice(CITIES) for c in self.pools["companies"]}

    @cached_property
    def people(self) -> list[Person]:
        """All people, with unique full names, in a fixed order."""
        rng = random.Random(f"world-people:{self.seed}")
        pools = self.pools
        out, seen = [], set()
        while len(out) < self.n_people:
            name = f"{rng.choice(pools['first'])} {rng.choice(pools['middle'])} {rng.choice(pools['last'])}"
            if name in seen:
                continue
            seen.add(name)
            company = rng.choice(pools["companies"])
            date = f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {rng.randint(1900, 2005)}"
            out.append(Person(name, rng.choice("mf"), date, rng.choice(CITIES), rng.choice(pools["universities"]),
                              rng.choice(MAJORS), company, self.company_city[company]))
        return out

    @cached_property
    def name_parts(self) -> frozenset[str]:
        """Every first/middle/last name word this world can use (the reading suite avoids them)."""
        p = self.pools
        return frozenset(p["first"]) | frozenset(p["middle"]) | frozenset(p["last"])

    # ------------------------------------------------------------------ documents
    def doc(self, index: int, seed: int = 0, kinds: tuple[float, float, float] = (0.6, 0.25, 0.15)) -> str:
        """Training document number ``index`` of the stream with seed ``seed``.

        A biography (all six facts, shuffled, TRAIN phrasings, fillers), an open-book passage
        followed by questions, or a block of closed-book question/answer lines, in the
        proportions ``kinds``.
        """
        rng = random.Random(f"world-doc:{self.seed}:{seed}:{index}")
        r = rng.random()
        if r < kinds[0]:
            return self.biography(rng.choice(self.people), rng)
        if r < kinds[0] + kinds[1]:
            return self.passage_with_questions(rng.choice(self.people), rng)
        return self.qa_block([rng.choice(self.people) for _ in range(rng.randint(3, 8))], rng)

    def biography(self, person: Person, rng: random.Random) -> str:
        """All six facts in random order and random TRAIN phrasings, with 0-3 filler sentences."""
        attrs = list(ATTRIBUTES)
        rng.shuffle(attrs)
        sentences = []
        for i, attr in enumerate(attrs):
            tpl = rng.choice(TRAIN_SENTENCES[attr])
            sentences.append(render_sentence(tpl, person, getattr(person, attr), use_pronoun=i > 0 and rng.random() < 0.3))
        for tpl in rng.sample(FILLER, rng.choice((0, 0, 1, 1, 2, 3))):
            sentences.insert(rng.randint(1, len(sentences)), render_sentence(tpl, person, "", use_pronoun=rng.random() < 0.6))
        return " ".join(sentences)

    def passage(self, person: Person, attrs: list[str], rng: random.Random) -> str:
        """2-4 sentence open-book passage stating ``attrs`` of ``person`` in TRAIN phrasings, each
        value verbatim (so the answer to a question about it can be copied)."""
        sentences = []
        for i, attr in enumerate(attrs):
            verbatim = [t for t in TRAIN_SENTENCES[attr] if "{v}" in t]  # the value appears verbatim
            sentences.append(render_sentence(rng.choice(verbatim), person, getattr(person, attr),
                                             use_pronoun=i > 0 and rng.random() < 0.5))
        return " ".join(sentences)

    def passage_with_questions(self, person: Person, rng: random.Random) -> str:
        """Open-book format taught to the model (the ``reading`` suite uses exactly this format)."""
        attrs = rng.sample(ATTRIBUTES, rng.randint(2, 4))
        text = self.passage(person, attrs, rng)
        asked = rng.sample(attrs, rng.randint(1, len(attrs)))
        qas = [f"Question: {rng.choice(TRAIN_QUESTIONS[a]).format(n=person.name)}\nAnswer: {getattr(person, a)}"
               for a in asked]
        return text + "\n" + "\n".join(qas)

    def qa_block(self, people: list[Person], rng: random.Random) -> str:
        """Closed-book question/answer lines in TRAIN phrasings."""
        lines = []
        for p in people:
            a = rng.choice(ATTRIBUTES)
            lines.append(f"Question: {rng.choice(TRAIN_QUESTIONS[a]).format(n=p.name)}\nAnswer: {getattr(p, a)}")
        return "\n".join(lines)


def unseen_name(rng: random.Random, world: World) -> str:
    """A three-part name none of whose parts belongs to ``world``'s name pools (never trained on)."""
    while True:
        parts = [syllable_word(rng, rng.choice((2, 3))) for _ in range(3)]
        if all(len(p) >= 4 and p not in world.name_parts for p in parts):
            return " ".join(parts)
