"""A realistic large PMC-Patients v1 corpus for the full-size benchmarks, made at run time from the
sentences of the real sample (../shared/data/pmc-patients/, read from there, never copied here).

    python benchmarks/realistic_corpus.py --records 250000 --out /tmp/realistic-250k.csv
    python benchmarks/realistic_corpus.py --records 100 --start 250000 --out /tmp/update-100.csv
    python benchmarks/realistic_corpus.py --stats [--json]   # generated against real: counts only
    python benchmarks/realistic_corpus.py --check [--json]   # the project's reader and validator, 2,000 rows

    from realistic_corpus import iter_records, write_csv     # from another script in benchmarks/
    write_csv(path, 250_000)                                  # records 0 .. 249,999
    write_csv(update, 100, start=250_000)                     # 100 new records, no uid or PMID shared

How a record is made, and what it keeps of the real sample:
- articles: a real article is drawn (812 for 1,000 patients, 1 to 11 patients each) and becomes a new
  article of as many patients, sharing one title, PMID and PMC number; its patients link to each other
  in similar_patients with score 2, as in-article links do in the real data. The real record's score-1
  links (all to patients outside the sample, so never in the corpus) and relevant_articles (real PMIDs)
  are kept, and the new PMID is added with score 2, as each real record lists its own. PMC numbers
  start at 60,000,000 and PMIDs at 90,000,000, far above any real one; both come from the index of the
  article's first record, so batches with different `start` never share one.
- patients: each real patient of the drawn article leads one new patient: its sex, and its age moved
  within its unit and age band (up to 4 years for adults, 1 unit for children); the opening sentence is
  the lead's own with the age rewritten ("A 78-year-old" -> "An 80-year-old"), or, where it states no
  age, the opening of another real patient of the same sex, band and unit. The length is drawn from the
  real lengths (+-3%) and filled with whole real sentences, in order, from the lead and 1 to 3 donors:
  the real records of the same sex and age band (animals with animals) that share most terms with the
  lead, so a record reads like one case. Sentences that restate the donor's own age are left out.
- vocabulary: rare words of the sample (a stem seen at most twice, with a medical root or ending, or a
  proper noun) are spelled anew, consistently within an article (title included), with words from a
  character model of the sample's rare and long words, at the rate of Heaps' law V(n) = K * n^beta
  fitted on sub-samples of 100 to 1,000 real records (project tokenizer): the vocabulary keeps growing
  past 1,000 records instead of saturating. Where no new word is due, a rare word keeps its real
  spelling or takes an earlier new word. Plain rare words ("destined") are spelled anew only in the
  first thousand records or so, where new terms are due faster than the medical ones can take them.
- streaming and deterministic: the process stays near 290 MB at 20,000 records and 335 MB at 250,000
  (all that grows is a 64-bit digest per record, which keeps every summary distinct); the same
  (n, seed, start) give the same file, and a shorter n gives the first records of a longer one (but for
  the cut last article). A batch that starts at `start` begins a new article there.

Measured with --stats (100,000 generated records against the 1,000 real ones, docs/PERFORMANCE.md):
characters per summary mean 2,938 against 2,976 (p10/p50/p90 1,134/2,678/4,975 against
1,104/2,689/5,096); distinct terms per summary 211 against 206; vocabulary 17,720 / 55,112 / 171,379 at
1k / 10k / 100k records against 17,564 measured at 1k and 55,195 / 172,057 by the fitted law (beta 0.494
real, 0.493 generated from 1k up); no summary twice. `--stats` prints counts only, never record text.
"""

from __future__ import annotations

import argparse
import ast
import bisect
import csv
import hashlib
import json
import logging
import math
import random
import re
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import Stemmer
from _common import REAL_CSV, machine, stamp
from bm25s.stopwords import STOPWORDS_EN

from patientinsight.index.lexical import tokenize
from patientinsight.records.ages import YEARS_PER_UNIT, age_band

log = logging.getLogger("realistic_corpus")

PMC_BASE = 60_000_000  # real PMC numbers are below 13 million
PMID_BASE = 90_000_000  # real PMIDs are below 41 million
DEFAULT_RECORDS = 250_000

TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s's own pattern: a replaced word is exactly one term
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
ABBREVIATIONS = frozenset(
    {"fig", "figs", "dr", "drs", "mr", "mrs", "ms", "prof", "st", "no", "nos", "vs", "al", "approx", "e.g", "i.e"}
    | {"inc", "jr", "sr", "co", "ltd", "cf", "ca", "resp"}
)
# An age as case reports write it: "60-year-old", "44 y/o", "aged 12 years", "5-month-old".
AGE_PHRASE = re.compile(r"(?<![\w.])(\d{1,3})(?:\s*-\s*|\s+)?(years?|yrs?|y/o|months?|weeks?|days?|hours?)\b", re.I)
UNIT_OF = {"y": "year", "m": "month", "w": "week", "d": "day", "h": "hour"}
ARTICLE_BEFORE = re.compile(r"(?:^|(?<=\s))(an?|An?)\s+$")
NAMES_A_CASE = re.compile(r"\b(?:[Cc]ase|[Pp]atient|[Tt]win) (?:\d+|[IVX]+)\b")
# Veterinary reports are in the sample too; their sentences are mixed only with each other's.
ANIMAL = re.compile(
    r"\b(?:dogs?|canine|cats?|feline|calf|heifer|cows?|cattle|bovine|horses?|mare|gelding|equine|pony|spaniel|"
    r"retriever|terrier|collie|pinscher|dachshund|greyhound|poodle|boxer dog|guinea pig|alpaca|llama|cria|eagle|"
    r"parrot|rabbit|ferret|goat|sheep|ewe|piglet|spayed|neutered|veterinary|saanen|heeler)\b",
    re.I,
)
BANDS = ("neonate", "infant", "child", "adolescent", "adult", "older adult")
AGE_SPREAD = {"adult": 4, "older adult": 4}  # years an adult's age may move; 1 unit otherwise
# Donors per patient: 1, a second one half the time, one more per 6,000 characters of summary.
DONORS_BASE, DONORS_EXTRA, DONOR_PER_CHARS = 1, 0.5, 6000
LEAD_SHARE = (0.4, 0.7)  # how much of the summary the lead tells
MIN_DONORS = 6  # a donor pool smaller than this borrows from the neighbouring age bands
NEAREST_DONORS = 8  # donors are the most alike records of the pool: mixed cases still read as one
DRAWS = 20  # tries at a summary that no earlier record of the batch has

RARE_COUNT = 2  # "seen once or twice in the sample"
# A rare word is taken for a medical one (a drug, a gene, a procedure) when it has a medical root or
# ending; the others ("destined", "hobby") are plain English and are spelled anew only when needed.
MEDICAL_MIN_LETTERS = 6
MEDICAL = re.compile(
    r"itis|osis|oses|ectom|otom|ostom|a?emia|omas?$|olog|plast|scop|graph|gram|path|cyt|derm|neur|cardi|hepat|"
    r"nephr|gastr|haem|hema|hemo|myo|myel|oste|pneum|pulmon|bronch|trache|laryn|phary|o?esoph|enter|angi|arter|"
    r"thromb|embol|lymph|leuk|erythr|plasm|immun|toxi|bacter|viru|fung|myc|cocc|bacill|mab$|nib$|pril$|olol$|"
    r"sartan|statin|azol|cillin|cyclin|floxacin|tide$|parin|dipin|prazol|azepam|zolam|idine$|azine$|amine$|"
    r"amide$|uria|algia|penia|phil|phob|plegi|paresis|troph|megal|ptosis|rrh|scler|steno|crani|cephal|mening|"
    r"ocul|ophthalm|retin|kerat|otic$|rhin|gingiv|stomat|gloss|thyr|adren|pancrea|splen|chole|cyst|ureter|"
    r"urethr|prostat|orchi|ovar|hyster|salping|mamm|pelv|spondyl|arthr|chondr|tendin|fasci|sarc|carcin|onco|"
    r"tumou?r|genic|genom|chrom|somat|hydro|hypo|hyper|endo|intra|supra|infra|poly|dys|micro|macro|histo|"
    r"electro|echo|radio|tomo|sono|melan|glyc|prote|pept|estr|andr|gonad|lact"
)
SPARE_COUNT, SPARE_MIN_LETTERS = 5, 5  # plain words that may be spelled anew: seen up to 5 times, 5+ letters
KEEP_REAL_WORD = 0.25  # share of rare words that keep their real spelling where no new word is due

WORD_BITS = 20  # 1,048,576 new words: enough for about 3.9 million records at the sample's rate
WORD_SPACE = 1 << WORD_BITS
WORD_CACHE = 1 << 18  # bounded: the words of recent ids are kept, older ones are rebuilt
MIN_WORD = 6  # letters before a new word may end
MAX_ENDING = 4  # letters drawn after the unique part: longer endings read as two words run together
MARKOV_ORDER = 3
MIN_CONTEXT = 3  # continuations a context needs before the model trusts it over a shorter one
FLATTEN = 1.3  # counts ** (1 / FLATTEN): more letters' worth of choice, so the unique part is shorter

# Heaps' law is fitted on random sub-samples of this many real records, each averaged over draws.
HEAPS_SIZES = (100, 200, 500, 1000)
HEAPS_DRAWS = 5


# ---------------------------------------------------------------------------------------------- the sample


# A context's next characters and cumulative probabilities: without the end of a word, then with it.
_Continuations = tuple[tuple[str, ...], tuple[float, ...], tuple[str, ...], tuple[float, ...]]


@dataclass(slots=True)
class _Text:
    """A sentence (or title, or part of an opening) ready to be written: literal pieces with slots
    between them, each slot a rare real word that the article may spell anew."""

    text: str
    parts: tuple[Any, ...] | None  # literal, (term id, style, surface, plain), literal, ...; None: no slot
    base: tuple[int, ...]  # the term ids it brings as they are (what the vocabulary saturates on)
    restates_age: bool = False  # "the 60-year-old patient": left out, the new opening may say 62
    names_case: bool = False  # "Case 2 was ...": only in its own report's story


@dataclass(slots=True)
class _Opening:
    """A first sentence whose age can be rewritten: prefix, [article], number, suffix."""

    prefix: _Text
    article: str  # "A", "a" or "" (the article before the number, which follows the new number)
    suffix: _Text
    unit: str


@dataclass(slots=True)
class _Real:
    title: _Text
    sentences: list[_Text]
    age: list[tuple[float, str]]
    age_raw: str
    sex: str
    group: tuple[str, str]  # (age band or "animal", sex): whose sentences may be mixed with its own
    unit: str
    opening: _Opening | None
    relevant: dict[str, int]  # relevant_articles without its own PMID
    outside_links: dict[str, int]  # the score-1 similar patients (all outside the sample)


@dataclass
class _Sample:
    columns: list[str]
    records: list[_Real]
    articles: list[list[int]]
    lengths: list[int]
    donors: list[list[int]]  # per real record: the most alike records of its group, its donors
    openings: dict[tuple[str, str, str], list[int]]
    terms: int  # distinct terms in the sample's summaries
    heaps_k: float
    heaps_beta: float
    heaps_curve: dict[int, float]
    model: dict[str, _Continuations]


def _escaped(sentence: str, at: int) -> bool:
    """A word right after a backslash: the sample's literal "\\n" glued to it ("\\nHistory")."""
    return at > 0 and sentence[at - 1] == "\\"


def _split_sentences(text: str) -> list[str]:
    out, start = [], 0
    for match in SENTENCE_BREAK.finditer(text):
        head = text[start : match.start()]
        words = head.split()
        if words and words[-1].rstrip(".").lower() in ABBREVIATIONS:
            continue  # "Fig. 2", "Dr. Smith": not the end of a sentence
        out.append(head)
        start = match.end()
    out.append(text[start:])
    return [s.strip() for s in out if s.strip()]


def _unit(word: str) -> str:
    return UNIT_OF[word[0].lower()]


def _fit_heaps(curve: dict[int, float]) -> tuple[float, float]:
    """Least squares of log V on log n: V(n) = K * n^beta."""
    x = np.log(np.array(list(curve), dtype=float))
    y = np.log(np.array(list(curve.values()), dtype=float))
    beta, log_k = np.polyfit(x, y, 1)
    return float(math.exp(log_k)), float(beta)


def heaps_curve(docs: list[set[str]], sizes: Iterable[int], draws: int, seed: int = 0) -> dict[int, float]:
    """Mean vocabulary of random sub-samples of each size (all of them when the size is the whole)."""
    rng = random.Random(seed)
    curve = {}
    for size in sizes:
        runs = 1 if size >= len(docs) else draws
        total = 0
        for _ in range(runs):
            chosen = docs if size >= len(docs) else rng.sample(docs, size)
            total += len(set().union(*chosen))
        curve[size] = total / runs
    return curve


@lru_cache(maxsize=2)
def load_sample(path: Path = REAL_CSV) -> _Sample:
    """Read the real sample once per process and prepare everything the generator draws from."""
    if not path.exists():
        raise SystemExit(f"{path} not found: set PATIENTINSIGHT_REAL_DATA to the folder of PMC-Patients files")
    started = time.perf_counter()
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    stemmer = Stemmer.Stemmer("english")
    stop = frozenset(STOPWORDS_EN)
    stems: dict[str, str] = {}

    def stem(low: str) -> str:
        found = stems.get(low)
        if found is None:
            found = stems[low] = stemmer.stemWord(low)
        return found

    # Pass 1: every term occurrence, as bm25s sees it (lower-cased, stop words out, stemmed).
    split = [_split_sentences(row["patient"]) for row in rows]
    counts: Counter[str] = Counter()
    proper: set[str] = set()
    medical: set[str] = set()
    plain: set[str] = set()
    for sentences in split:
        for sentence in sentences:
            for k, match in enumerate(TOKEN.finditer(sentence)):
                word = match.group()
                low = word.lower()
                if low in stop:
                    continue
                term = stem(low)
                counts[term] += 1
                if not word.isalpha() or _escaped(sentence, match.start()):
                    continue
                if len(word) >= SPARE_MIN_LETTERS:
                    plain.add(term)
                if len(word) >= MEDICAL_MIN_LETTERS and MEDICAL.search(low):
                    medical.add(term)
                if k > 0 and word[0].isupper() and not word.isupper():
                    proper.add(term)  # a capital inside a sentence: a name, a place, a brand
    rare = {t for t, c in counts.items() if c <= RARE_COUNT and (t in medical or t in proper)}
    # Plain rare words ("hobby", "vicious") are spelled anew only while new words are due faster than
    # the rare medical words can take them (the first couple of thousand records); else they stay.
    spare = {t for t, c in counts.items() if c <= SPARE_COUNT and t in plain} - rare
    ids = {t: i for i, t in enumerate(sorted(counts))}

    def text_of(sentence: str, replace: bool = True) -> _Text:
        parts: list[Any] = []
        base: list[int] = []
        last = 0
        for match in TOKEN.finditer(sentence):
            low = match.group().lower()
            if low in stop:
                continue
            term = stem(low)
            if (
                replace
                and (term in rare or term in spare)
                and match.group().isalpha()
                and not _escaped(sentence, match.start())
            ):
                word = match.group()
                style = 2 if word.isupper() else 1 if word[0].isupper() else 0
                parts += [sentence[last : match.start()], (ids[term], style, word, term in spare)]
                last = match.end()
            elif term in ids:
                base.append(ids[term])
        if not parts:
            return _Text(sentence, None, tuple(sorted(set(base))))
        parts.append(sentence[last:])
        return _Text(sentence, tuple(parts), tuple(sorted(set(base))))

    records: list[_Real] = []
    by_pmid: dict[str, list[int]] = {}
    for row, sentences in zip(rows, split, strict=True):
        age = [(float(v), _unit(u)) for v, u in ast.literal_eval(row["age"] or "[]")]
        years = sum(v * YEARS_PER_UNIT[u] for v, u in age) if age else None
        animal = bool(ANIMAL.search(" ".join(sentences[:2])))
        group = ("animal" if animal else age_band(years) or "unknown", row["gender"])
        own_value = age[0][0] if len(age) == 1 else None
        texts = []
        for k, sentence in enumerate(sentences):
            t = text_of(sentence)
            restates = any(float(m.group(1)) == own_value for m in AGE_PHRASE.finditer(sentence))
            t.restates_age = k > 0 and restates
            t.names_case = bool(NAMES_A_CASE.search(sentence))
            texts.append(t)
        opening = None
        if own_value is not None and own_value.is_integer() and sentences:
            for m in AGE_PHRASE.finditer(sentences[0]):
                if float(m.group(1)) == own_value and _unit(m.group(2)) == age[0][1]:
                    head, tail = sentences[0][: m.start(1)], sentences[0][m.end(1) :]
                    found = ARTICLE_BEFORE.search(head)
                    article = ""
                    if found:
                        article = "A" if found.group(1)[0] == "A" else "a"
                        head = head[: found.start(1)]
                    opening = _Opening(text_of(head), article, text_of(tail), age[0][1])
                    break
        relevant = ast.literal_eval(row["relevant_articles"] or "{}")
        relevant.pop(row["PMID"], None)
        links = ast.literal_eval(row["similar_patients"] or "{}")
        by_pmid.setdefault(row["PMID"], []).append(len(records))
        records.append(
            _Real(
                title=text_of(row["title"]),
                sentences=texts,
                age=age,
                age_raw=row["age"],
                sex=row["gender"],
                group=group,
                unit=age[0][1] if len(age) == 1 else "",
                opening=opening,
                relevant=relevant,
                outside_links={u: s for u, s in links.items() if s == 1},
            )
        )

    openings: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.opening is not None:
            openings[(*r.group, r.opening.unit)].append(i)

    docs = [set(d) for d in tokenize([row["patient"] for row in rows])]
    donors = _nearest_donors(records, docs, _donor_pools(records))
    curve = heaps_curve(docs, HEAPS_SIZES, HEAPS_DRAWS)
    heaps_k, heaps_beta = _fit_heaps(curve)
    # Words that teach the character model what a rare medical word looks like: the rare ones and the
    # medical-looking ones (plain English would make new words read like two words run together).
    training = {
        low
        for low, term in stems.items()
        if low.isascii() and low.isalpha() and len(low) >= MIN_WORD and (term in rare or term in medical)
    }
    sample = _Sample(
        columns=columns,
        records=records,
        articles=list(by_pmid.values()),
        lengths=[len(row["patient"]) for row in rows],
        donors=donors,
        openings=dict(openings),
        terms=len(counts),
        heaps_k=heaps_k,
        heaps_beta=heaps_beta,
        heaps_curve=curve,
        model=_train_model(sorted(training)),
    )
    log.info(
        "sample: %d records, %d articles, %d terms (%d rare medical, %d rare plain), Heaps K=%.1f beta=%.3f, %.1f s",
        len(records),
        len(sample.articles),
        sample.terms,
        len(rare),
        len(spare),
        heaps_k,
        heaps_beta,
        time.perf_counter() - started,
    )
    return sample


def _donor_pools(records: list[_Real]) -> dict[tuple[str, str], list[int]]:
    """Who may give sentences to a patient of each group: the same sex and age band; a small band
    borrows from its neighbours (same sex) until it has MIN_DONORS."""
    members: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if len(r.sentences) >= 2:
            members[r.group].append(i)
    pools = {}
    for group in {r.group for r in records}:
        band, sex = group
        pool = list(members.get(group, []))
        if band in BANDS:
            at = BANDS.index(band)
            for distance in range(1, len(BANDS)):
                if len(pool) >= MIN_DONORS:
                    break
                for near in (at - distance, at + distance):
                    if 0 <= near < len(BANDS):
                        pool += members.get((BANDS[near], sex), [])
        if len(pool) < MIN_DONORS:
            pool += [i for g, m in members.items() if g[0] == band and g != group for i in m]
        pools[group] = pool
    return pools


def _nearest_donors(
    records: list[_Real], docs: list[set[str]], pools: dict[tuple[str, str], list[int]]
) -> list[list[int]]:
    """For each record, the NEAREST_DONORS records of its pool that share the most of its terms
    (Jaccard): sentences of alike cases (often the other patients of its article) read as one story,
    and bring about as many new terms as the rest of one real report would."""
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for i, doc in enumerate(docs):
        for term in doc:
            rows.append(i)
            cols.append(vocab.setdefault(term, len(vocab)))
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(docs), len(vocab)))
    shared = (x @ x.T).toarray()
    sizes = np.asarray(x.sum(axis=1)).ravel()
    alike = shared / np.maximum(sizes[:, None] + sizes[None, :] - shared, 1)
    nearest = []
    for i, record in enumerate(records):
        pool = sorted((j for j in pools[record.group] if j != i), key=lambda j: -alike[i, j])
        nearest.append(pool[:NEAREST_DONORS] or [i])
    return nearest


# ------------------------------------------------------------------------------------------- new words


def _train_model(words: list[str]) -> dict[str, _Continuations]:
    """A character model of order 3 with back-off: for each context, the next characters and their
    cumulative probabilities, without and with the end of the word ('$')."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    pad = "^" * MARKOV_ORDER
    for word in words:
        s = pad + word + "$"
        for i in range(MARKOV_ORDER, len(s)):
            for order in range(MARKOV_ORDER + 1):
                counts[s[i - order : i]][s[i]] += 1
    model = {}
    for context, following in counts.items():
        inner = {c: n for c, n in following.items() if c != "$"}
        if sum(inner.values()) < MIN_CONTEXT and context:
            continue  # too rare to trust: the shorter context answers
        model[context] = (*_cumulative(inner), *_cumulative(following))
    return model


def _cumulative(counts: dict[str, int]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    chars = tuple(sorted(counts))
    weights = [counts[c] ** (1 / FLATTEN) for c in chars]
    total = sum(weights)
    cum, acc = [0.0], 0.0
    for w in weights:
        acc += w
        cum.append(acc / total)
    cum[-1] = 1.0
    return chars, tuple(cum)


def _scramble(j: int, salt: int) -> int:
    """A bijection of [0, WORD_SPACE): consecutive ids land far apart, so new words do not share
    their first letters (each step is invertible: add, xor-shift, multiply by an odd number)."""
    mask = WORD_SPACE - 1
    x = (j + salt) & mask
    x ^= x >> 11
    x = (x * 0x5BD1E995) & mask
    x ^= x >> 9
    x = (x * 0x1B873593) & mask
    x ^= x >> 10
    return x


class NewWords:
    """Word number j -> a new, medical-looking word. The first letters decode j's point in [0, 1)
    through the character model, as arithmetic decoding does, until no other word's point shares the
    interval: so two numbers never give the same word, and no table of words is kept. The ending is
    then drawn from the model."""

    def __init__(self, model: dict[str, Any], seed: int) -> None:
        self._model = model
        self._salt = (seed * 0x9E3779B1) & (WORD_SPACE - 1)
        self.word = lru_cache(maxsize=WORD_CACHE)(self._word)

    def _next(self, context: str, with_end: bool) -> tuple[tuple[str, ...], tuple[float, ...]]:
        for cut in range(len(context) + 1):
            found = self._model.get(context[cut:])
            if found is not None and (with_end or found[0]):
                return (found[2], found[3]) if with_end else (found[0], found[1])
        raise AssertionError("the empty context is always in the model")

    def _word(self, j: int) -> str:
        if not 0 <= j < WORD_SPACE:
            raise ValueError(f"new word {j} is past the {WORD_SPACE:,} this generator can make")
        x = (_scramble(j, self._salt) + 0.5) / WORD_SPACE
        low, width = 0.0, 1.0
        context = "^" * MARKOV_ORDER
        out: list[str] = []
        while width * WORD_SPACE >= 1.0:
            chars, cum = self._next(context, with_end=False)
            k = min(max(bisect.bisect_right(cum, (x - low) / width) - 1, 0), len(chars) - 1)
            low += width * cum[k]
            width *= cum[k + 1] - cum[k]
            out.append(chars[k])
            context = context[1:] + chars[k]
        rng = random.Random(j * 2 + 1 + self._salt)
        for _ in range(MAX_ENDING):
            chars, cum = self._next(context, with_end=len(out) >= MIN_WORD)
            c = chars[min(bisect.bisect_right(cum, rng.random()) - 1, len(chars) - 1)]
            if c == "$":
                break
            out.append(c)
            context = context[1:] + c
        return "".join(out)


# ------------------------------------------------------------------------------------------- generation


def _article_word(n: int) -> bool:
    """Whether a number is read with "an": 8, 11, 18, 80-89 ("an 18-year-old")."""
    s = str(n)
    return s[0] == "8" or s in ("11", "18")


def _styled(word: str, style: int) -> str:
    return word.upper() if style == 2 else word.capitalize() if style == 1 else word


class _Generator:
    """The records of one batch, article by article. State is bounded: the word cache, and (for a
    batch from 0) one flag per real term."""

    def __init__(self, sample: _Sample, seed: int, start: int) -> None:
        self.s = sample
        self.start = start
        self.plan = random.Random(f"realistic-corpus:plan:{seed}:{start}")
        self.choose = random.Random(f"realistic-corpus:words:{seed}:{start}")
        self.words = NewWords(sample.model, seed)
        # New-word ids: a batch from 0 counts from 0; a later batch starts above every id the records
        # before it can have used (at most K * start^beta), and reuses ids below what they surely used.
        self.fresh_base = 0 if start == 0 else math.ceil(sample.heaps_k * start**sample.heaps_beta)
        self.reuse_old = 0 if start == 0 else max(0, self.fresh_base - sample.terms)
        self.fresh_used = 0
        self.seen = bytearray(sample.terms) if start == 0 else None
        self.seen_count = 0
        self.quota = 0
        self.spare_quota = 0
        # The one state that grows with the batch: a 64-bit digest per summary (about 60 bytes each,
        # 15 MB at 250,000 records), so that no summary is written twice.
        self.digests: set[int] = set()

    # -- vocabulary control
    def _target(self, index: int) -> int:
        return round(self.s.heaps_k * (index + 1) ** self.s.heaps_beta)

    def _see(self, ids: Iterable[int]) -> None:
        seen = self.seen
        if seen is None:
            return
        for i in ids:
            if not seen[i]:
                seen[i] = 1
                self.seen_count += 1

    def _assign(self, term: int, spare: bool) -> str | None:
        """The spelling of a rare term in this article: a new word while the record's quota lasts,
        else the real word or (for a rare medical word) an earlier new word."""
        if self.quota > 0 and (not spare or self.spare_quota > 0):
            self.quota -= 1
            self.spare_quota -= spare
            j = self.fresh_base + self.fresh_used
            self.fresh_used += 1
            return self.words.word(j)
        earlier = self.reuse_old + self.fresh_used
        if spare or earlier == 0 or self.choose.random() < KEEP_REAL_WORD:
            self._see((term,))
            return None
        r = self.choose.randrange(earlier)
        return self.words.word(r if r < self.reuse_old else self.fresh_base + r - self.reuse_old)

    def _render(self, text: _Text, spelled: dict[int, str | None], assign: bool = True) -> str:
        if text.parts is None:
            return text.text
        out = []
        for k, part in enumerate(text.parts):
            if k % 2 == 0:
                out.append(part)
                continue
            term, style, surface, spare = part
            if term in spelled:
                word = spelled[term]
            elif assign:
                word = spelled[term] = self._assign(term, spare)
            else:
                word = None
            out.append(surface if word is None else _styled(word, style))
        return "".join(out)

    # -- one patient
    def _age(self, lead: _Real) -> tuple[int, str]:
        value, unit = lead.age[0]
        band = lead.group[0] if lead.group[0] in BANDS else age_band(value * YEARS_PER_UNIT[unit])
        spread = AGE_SPREAD.get(band, 1) if unit == "year" else 1
        options = [
            v
            for v in range(int(value) - spread, int(value) + spread + 1)
            if 1 <= v <= 105 and (band not in BANDS or age_band(v * YEARS_PER_UNIT[unit]) == band)
        ]
        return self.plan.choice(options or [int(value)]), unit

    def _patient(self, lead_index: int) -> tuple[str, Any, list[_Text]]:
        """(age literal, opening, body sentences) of one new patient led by a real one."""
        s, rng = self.s, self.plan
        lead = s.records[lead_index]
        opening: Any = lead.sentences[0] if lead.sentences else None
        age_raw = lead.age_raw
        template = lead.opening
        if template is None and lead.unit:
            pool = s.openings.get((*lead.group, lead.unit))
            if pool:
                template = s.records[rng.choice(pool)].opening
        if template is not None:
            value, unit = self._age(lead)
            age_raw = f"[[{float(value)!r}, '{unit}']]"
            opening = (template, value)
        target = s.lengths[rng.randrange(len(s.lengths))] * rng.uniform(0.97, 1.03)
        total = self._length(opening)
        body: list[_Text] = []
        pool = s.donors[lead_index]
        donors = DONORS_BASE + (rng.random() < DONORS_EXTRA) + int(target // DONOR_PER_CHARS)
        sources = [lead_index] + [rng.choice(pool) for _ in range(donors)]
        lead_share = rng.uniform(*LEAD_SHARE)
        for k, source in enumerate(sources):
            # The lead tells 40-70% of the story; the donors share the rest equally.
            share = 1.0 if k == len(sources) - 1 else lead_share if k == 0 else 1 / (len(sources) - k)
            goal = total + (target - total) * share
            total = self._take(s.records[source], k == 0, goal, target, total, body)
        for _ in range(8):  # the chosen reports ran out of sentences: more of the same kind
            if total >= target * 0.95:
                break
            total = self._take(s.records[rng.choice(pool)], False, target, target, total, body)
        return age_raw, opening, body

    @staticmethod
    def _length(opening: Any) -> int:
        if opening is None:
            return 0
        if isinstance(opening, _Text):
            return len(opening.text)
        template, value = opening
        return len(template.prefix.text) + len(template.article) + 1 + len(str(value)) + len(template.suffix.text)

    @staticmethod
    def _take(source: _Real, is_lead: bool, goal: float, target: float, total: int, body: list[_Text]) -> int:
        """Whole sentences of one report, in its order, from where the story stands (the lead from
        its second sentence), while each one brings the length closer to the goal."""
        sentences = source.sentences
        at = 1 if is_lead else max(1, round(total / target * len(sentences)))
        while at < len(sentences) and total < goal:
            sentence = sentences[at]
            at += 1
            if sentence.restates_age or (sentence.names_case and not is_lead):
                continue
            grown = total + 1 + len(sentence.text)
            if grown - goal > goal - total:
                break
            body.append(sentence)
            total = grown
        return total

    def _opening_text(self, opening: Any, spelled: dict[int, str | None]) -> str:
        if opening is None:
            return ""
        if isinstance(opening, _Text):
            return self._render(opening, spelled)
        template, value = opening
        article = ""
        if template.article:  # "A 78-year-old" becomes "An 80-year-old"
            article = ("An " if _article_word(value) else "A ") if template.article == "A" else ""
            article = article or ("an " if _article_word(value) else "a ")
        return self._render(template.prefix, spelled) + article + str(value) + self._render(template.suffix, spelled)

    def _written(self, lead_index: int, index: int, spelled: dict[int, str | None]) -> tuple[str, str]:
        """(summary, age literal) of the new patient at `index`, led by a real one."""
        age_raw, opening, body = self._patient(lead_index)
        if isinstance(opening, _Text):
            planned = [opening, *body]
        else:
            planned = [opening[0].prefix, opening[0].suffix, *body] if opening is not None else body
        if self.seen is not None:
            for t in planned:
                self._see(t.base)
            self.quota = self._target(index) - self.seen_count - self.fresh_used
        else:
            self.quota = self._target(index) - self.fresh_base - self.fresh_used
        # New words go to the rare medical words first; plain ones take only what those leave.
        medical = {p[0] for t in planned if t.parts for p in t.parts[1::2] if not p[3] and p[0] not in spelled}
        self.spare_quota = self.quota - len(medical)
        parts = [self._opening_text(opening, spelled)] + [self._render(t, spelled) for t in body]
        return " ".join(p for p in parts if p), age_raw

    # -- articles
    def records(self, n: int) -> Iterator[dict[str, str]]:
        s = self.s
        index, end = self.start, self.start + n
        while index < end:
            real_article = s.articles[self.plan.randrange(len(s.articles))]
            leads = real_article[: end - index]  # the last article of a batch may be cut short
            yield from self._article(leads, index)
            index += len(leads)

    def _article(self, leads: list[int], first: int) -> Iterator[dict[str, str]]:
        s = self.s
        pmc = PMC_BASE + first
        pmid = str(PMID_BASE + first)
        uids = [f"{pmc}-{k + 1}" for k in range(len(leads))]
        spelled: dict[int, str | None] = {}  # one spelling per rare term in the whole article
        texts, ages = [], []
        for k, lead_index in enumerate(leads):
            for _ in range(DRAWS):
                text, age_raw = self._written(lead_index, first + k, spelled)
                # A lead with few sentences and no rare word can give the same summary twice: draw again.
                digest = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest())
                if digest not in self.digests:
                    self.digests.add(digest)
                    break
            texts.append(text)
            ages.append(age_raw)
        lead = s.records[leads[0]]
        title = self._render(lead.title, spelled, assign=False)
        file_path = f"comm/PMC{pmc // 1_000_000:03d}xxxxxx/PMC{pmc}.xml"
        for k, lead_index in enumerate(leads):
            real = s.records[lead_index]
            similar = {u: 2 for u in uids if u != uids[k]} | real.outside_links
            values = {
                "patient_id": str(first + k),
                "patient_uid": uids[k],
                "PMID": pmid,
                "file_path": file_path,
                "title": title,
                "patient": texts[k],
                "age": ages[k],
                "gender": real.sex,
                "relevant_articles": repr(real.relevant | {pmid: 2}),
                "similar_patients": repr(similar),
            }
            yield {c: values[c] for c in s.columns}


def iter_records(n: int = DEFAULT_RECORDS, seed: int = 0, start: int = 0) -> Iterator[dict[str, str]]:
    """Records start .. start+n-1 as v1 CSV rows (column -> text, in the real file's column order)."""
    if n < 0 or start < 0:
        raise ValueError("n and start must be >= 0")
    return _Generator(load_sample(), seed, start).records(n)


def columns() -> list[str]:
    """The v1 CSV columns, as the real file has them."""
    return list(load_sample().columns)


def write_csv(path: Path | str, n: int = DEFAULT_RECORDS, seed: int = 0, start: int = 0) -> Path:
    """Write records start .. start+n-1 as a v1 CSV (the real file's columns and quoting)."""
    path = Path(path)
    started = time.perf_counter()
    names = columns()
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(names)
        block: list[list[str]] = []
        for done, row in enumerate(iter_records(n, seed, start), start=1):
            block.append([row[c] for c in names])
            if len(block) == 2000:
                writer.writerows(block)
                block = []
            if done % 50_000 == 0:
                elapsed = time.perf_counter() - started
                log.info("%d / %d records, %.0f records/s", done, n, done / elapsed)
        writer.writerows(block)
    log.info("%d records in %.1f s -> %s (%.0f MB)", n, time.perf_counter() - started, path, path.stat().st_size / 1e6)
    return path


# ------------------------------------------------------------------------------------------- comparison


def _spread(values: list[int] | np.ndarray) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {
        "mean": round(float(a.mean()), 1),
        "p10": round(float(np.percentile(a, 10)), 1),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p90": round(float(np.percentile(a, 90)), 1),
    }


def corpus_stats(records: int = 100_000, seed: int = 0) -> dict[str, Any]:
    """Counts of the real sample and of `records` generated ones (vocabulary at 1k, 10k, 100k, ...)."""
    sample = load_sample()
    with REAL_CSV.open(newline="", encoding="utf-8") as f:
        real_texts = [row["patient"] for row in csv.DictReader(f)]
    real_docs = [set(d) for d in tokenize(real_texts)]
    checkpoints = sorted({c for c in (100, 200, 500, 1000, 10_000, 100_000, 250_000) if c <= records} | {records})
    real = {
        "records": len(real_texts),
        "chars": _spread([len(t) for t in real_texts]),
        "distinct_terms": _spread([len(d) for d in real_docs]),
        "vocabulary": {str(k): round(v) for k, v in sample.heaps_curve.items()},
        "heaps_k": round(sample.heaps_k, 1),
        "heaps_beta": round(sample.heaps_beta, 3),
        "heaps_extrapolated": {
            str(n): round(sample.heaps_k * n**sample.heaps_beta) for n in sorted({*checkpoints, 250_000}) if n > 1000
        },
    }
    lengths: list[int] = []
    distinct: list[int] = []
    vocabulary: set[str] = set()
    curve: dict[int, int] = {}
    hashes: set[bytes] = set()
    started = time.perf_counter()
    batch: list[str] = []

    def flush() -> None:
        for doc in tokenize(batch):
            terms = set(doc)
            distinct.append(len(terms))
            vocabulary.update(terms)
            if len(distinct) in checkpoints:
                curve[len(distinct)] = len(vocabulary)
        batch.clear()

    for row in iter_records(records, seed):
        text = row["patient"]
        lengths.append(len(text))
        hashes.add(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest())
        batch.append(text)
        if len(batch) == 1000 or len(lengths) in checkpoints:  # a checkpoint closes a batch
            flush()
    flush()
    fit_points = {n: v for n, v in curve.items() if n >= 1000}
    _, gen_beta = _fit_heaps(fit_points) if len(fit_points) >= 2 else (float("nan"), float("nan"))
    generated = {
        "records": records,
        "seed": seed,
        "chars": _spread(lengths),
        "distinct_terms": _spread(distinct),
        "vocabulary": {str(k): v for k, v in curve.items()},
        "heaps_beta_fitted_1k_up": round(gen_beta, 3),
        "duplicate_texts": records - len(hashes),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return {"date": stamp(), "machine": machine(), "real": real, "generated": generated}


def check_validation(records: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Run the project's own reader and validator over a generated file: every row must be valid."""
    from patientinsight.ingest.sources import read_chunks
    from patientinsight.ingest.validation import validate_chunk

    with tempfile.TemporaryDirectory(prefix="realistic-corpus-") as folder:
        path = write_csv(Path(folder) / "realistic.csv", records, seed)
        seen: set[str] = set()
        valid = quarantined = 0
        reasons: Counter[str] = Counter()
        links_inside = links_missing = 0
        frames = []
        for chunk in read_chunks(str(path), 500):
            result = validate_chunk(chunk, str(path), seen)
            valid += len(result.valid)
            quarantined += len(result.quarantined)
            for entry in result.quarantined:
                reasons.update(f"{e['field']}: {e['reason']}" for e in entry["errors"])
            frames.append(result.valid[["uid", "pmid", "similar_patients"]])
        for frame in frames:
            for links in frame["similar_patients"]:
                for uid, score in json.loads(links).items():
                    if score == 2:
                        links_inside += uid in seen
                        links_missing += uid not in seen
    return {
        "records": records,
        "valid": valid,
        "quarantined": quarantined,
        "reasons": dict(reasons),
        "score2_links_in_file": links_inside,
        "score2_links_missing": links_missing,
    }


def _table(stats: dict[str, Any]) -> str:
    real, gen = stats["real"], stats["generated"]
    lines = [
        f"Realistic corpus against the real sample ({stats['date']}; {stats['machine']})",
        "",
        "| measure | real sample (1,000) | generated |",
        "|---|---|---|",
    ]
    for key, label in (("chars", "characters per summary"), ("distinct_terms", "distinct terms per summary")):
        for part in ("mean", "p10", "p50", "p90"):
            lines.append(f"| {label}, {part} | {real[key][part]:,.0f} | {gen[key][part]:,.0f} |")
    sizes = sorted({int(k) for k in real["vocabulary"]} | {int(k) for k in gen["vocabulary"]})
    for size in sizes:
        measured = real["vocabulary"].get(str(size))
        fitted = real["heaps_extrapolated"].get(str(size), round(real["heaps_k"] * size ** real["heaps_beta"]))
        shown = f"{measured:,}" if measured is not None else f"({fitted:,} by the fitted Heaps' law)"
        generated = gen["vocabulary"].get(str(size))
        lines.append(f"| vocabulary at {size:,} records | {shown} | {'-' if generated is None else f'{generated:,}'} |")
    lines.append(
        f"| Heaps exponent beta | {real['heaps_beta']:.3f} (K = {real['heaps_k']:.0f}, fit on 100-1,000) "
        f"| {gen['heaps_beta_fitted_1k_up']:.3f} (fit on 1,000 and up) |"
    )
    lines.append(f"| duplicate summaries | 0 | {gen['duplicate_texts']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=None, help="records to write (default 250,000)")
    parser.add_argument("--out", type=Path, help="the v1 CSV to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="index of the first record (an update batch)")
    parser.add_argument("--stats", action="store_true", help="compare with the real sample (counts only)")
    parser.add_argument("--check", action="store_true", help="the project's validator over generated rows")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not (args.out or args.stats or args.check):
        parser.error("say --out FILE, --stats or --check")
    if args.out:
        write_csv(args.out, DEFAULT_RECORDS if args.records is None else args.records, args.seed, args.start)
    if args.stats:
        stats = corpus_stats(100_000 if args.records is None or args.out else args.records, args.seed)
        print(json.dumps(stats, indent=2) if args.json else _table(stats))
    if args.check:
        checked = check_validation(2000 if args.records is None or args.out else args.records, args.seed)
        if args.json:
            print(json.dumps(checked, indent=2))
        else:
            print(
                f"validation of {checked['records']:,} generated rows: {checked['valid']:,} valid, "
                f"{checked['quarantined']:,} quarantined; score-2 links in the file "
                f"{checked['score2_links_in_file']:,}, missing {checked['score2_links_missing']:,}"
            )
        if checked["quarantined"]:
            sys.exit(1)


if __name__ == "__main__":
    main()
