"""A small synthetic sample in the PMC-Patients v1 CSV format, for the run command and the tests.

The text is generated from templates, not taken from real reports, so it can ship with the project.
Patients of one synthetic article share a condition and list each other as similar (score 2), as
in-article links do in the real dataset. Each condition has patients of a fitting age, and what a
summary says fits the patient's age: what the patient is called, the history, the vital signs. One row
repeats a uid, to show quarantine at work. Every title carries SYNTHETIC_TITLE, so the service can say
that the cases it shows are invented (their PMIDs and PMC numbers point at unrelated real articles).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from patientinsight.records.ages import DAYS_PER_YEAR, YEARS_PER_UNIT, age_band

CONDITIONS = [
    (
        "community-acquired pneumonia",
        "fever, productive cough and pleuritic chest pain",
        "a right lower lobe consolidation on chest radiograph",
        "intravenous ceftriaxone and azithromycin",
    ),
    (
        "acute myocardial infarction",
        "crushing retrosternal chest pain radiating to the left arm",
        "ST-segment elevation in the inferior leads and a raised troponin",
        "primary percutaneous coronary intervention",
    ),
    (
        "diabetic ketoacidosis",
        "polyuria, polydipsia, vomiting and abdominal pain",
        "a blood glucose of 32 mmol/L, ketonaemia and a metabolic acidosis",
        "intravenous fluids and an insulin infusion",
    ),
    (
        "acute appendicitis",
        "periumbilical pain migrating to the right iliac fossa with anorexia",
        "an inflamed, non-compressible appendix on ultrasound",
        "laparoscopic appendectomy",
    ),
    (
        "pulmonary embolism",
        "sudden dyspnoea, tachycardia and haemoptysis",
        "filling defects in both lower lobe pulmonary arteries on CT angiography",
        "anticoagulation with low-molecular-weight heparin",
    ),
    (
        "bacterial meningitis",
        "headache, neck stiffness, photophobia and confusion",
        "a turbid cerebrospinal fluid with neutrophilic pleocytosis",
        "intravenous ceftriaxone, vancomycin and dexamethasone",
    ),
    (
        "Kawasaki disease",
        "fever, conjunctival injection, a strawberry tongue and a rash",
        "coronary artery dilatation on echocardiography",
        "intravenous immunoglobulin and aspirin",
    ),
    (
        "ischaemic stroke",
        "sudden right-sided weakness and expressive aphasia",
        "an occlusion of the left middle cerebral artery on CT angiography",
        "intravenous thrombolysis followed by thrombectomy",
    ),
    (
        "acute pancreatitis",
        "severe epigastric pain radiating to the back",
        "a serum lipase five times the upper limit and peripancreatic fat stranding",
        "fluid resuscitation, analgesia and early enteral feeding",
    ),
    (
        "pyloric stenosis",
        "projectile non-bilious vomiting after every feed",
        "a thickened pyloric muscle on ultrasound",
        "laparoscopic pyloromyotomy",
    ),
    (
        "sarcoidosis",
        "dry cough, erythema nodosum and arthralgia",
        "bilateral hilar lymphadenopathy with non-caseating granulomas on biopsy",
        "oral prednisolone",
    ),
    (
        "tuberculous spondylitis",
        "chronic back pain, night sweats and weight loss",
        "destruction of two thoracic vertebrae with a paravertebral abscess",
        "a year of antituberculous therapy",
    ),
]

# How old the patients of each condition are, and how long their symptoms have lasted before they
# present: (youngest, oldest) in years, then (unit, fewest, most). A case series of pyloric stenosis
# is of young infants, one of myocardial infarction of adults.
PROFILES: dict[str, tuple[tuple[float, float], tuple[str, int, int]]] = {
    "community-acquired pneumonia": ((5, 92), ("day", 2, 7)),
    "acute myocardial infarction": ((38, 89), ("hour", 1, 6)),
    "diabetic ketoacidosis": ((3, 78), ("day", 1, 3)),
    "acute appendicitis": ((6, 75), ("hour", 12, 48)),
    "pulmonary embolism": ((19, 88), ("day", 1, 5)),
    "bacterial meningitis": ((5, 85), ("hour", 6, 36)),
    "Kawasaki disease": ((0.25, 5), ("day", 5, 9)),
    "ischaemic stroke": ((41, 90), ("hour", 1, 4)),
    "acute pancreatitis": ((19, 86), ("day", 1, 3)),
    "pyloric stenosis": ((14 / DAYS_PER_YEAR, 56 / DAYS_PER_YEAR), ("day", 2, 10)),
    "sarcoidosis": ((22, 64), ("week", 4, 16)),
    "tuberculous spondylitis": ((12, 84), ("month", 2, 9)),
}

# One of these strings is in every title of the sample: how the service knows a record is synthetic.
SYNTHETIC_TITLE = "a synthetic case report series"

# What a patient is called, by sex and age group (records/ages.age_band's groups).
PERSONS = {
    "neonate": {"M": ["male neonate", "newborn boy"], "F": ["female neonate", "newborn girl"]},
    "infant": {"M": ["male infant", "baby boy"], "F": ["female infant", "baby girl"]},
    "child": {"M": ["boy", "male child"], "F": ["girl", "female child"]},
    "adolescent": {"M": ["adolescent boy", "boy"], "F": ["adolescent girl", "girl"]},
    "adult": {"M": ["man", "male patient"], "F": ["woman", "female patient"]},
    "older adult": {"M": ["man", "male patient"], "F": ["woman", "female patient"]},
}
# Histories a patient of each age group can have (the sentence after "The <person>").
HISTORIES = {
    "neonate": [
        "was born at term after an uncomplicated pregnancy and was breastfed",
        "was born at 37 weeks' gestation by caesarean section and was formula-fed",
        "was born at term by spontaneous vaginal delivery; antenatal scans had been normal",
        "was the first child of healthy parents and had been feeding well until then",
    ],
    "infant": [
        "was born at term and had been developing normally",
        "had been feeding well and gaining weight",
        "was born at 34 weeks' gestation and had needed no neonatal intensive care",
        "had mild eczema and was otherwise well",
    ],
    "child": [
        "had no relevant past medical history and was fully immunised",
        "had asthma controlled with an inhaled corticosteroid",
        "had eczema and a peanut allergy",
        "had been developing normally and attended school",
    ],
    "adolescent": [
        "had no relevant past medical history",
        "had asthma since childhood",
        "had migraine without aura",
        "had acne treated with topical retinoids",
    ],
    "young adult": [
        "had no relevant past medical history",
        "had asthma since childhood",
        "had smoked 10 cigarettes a day since the age of 17",
        "had migraine and took no regular medication",
        "had hypothyroidism treated with levothyroxine",
    ],
    "adult": [
        "had no relevant past medical history",
        "had hypertension and hyperlipidaemia",
        "had type 2 diabetes mellitus",
        "had smoked 15 cigarettes a day for 20 years",
        "had asthma since childhood",
    ],
    "older adult": [
        "had hypertension and atrial fibrillation",
        "had type 2 diabetes mellitus and chronic kidney disease",
        "had a 40 pack-year smoking history",
        "had hypertension and hyperlipidaemia",
        "had osteoarthritis and no other relevant history",
    ],
}
# Plausible ranges by age group for an unwell patient: heart rate, systolic and diastolic pressure,
# respiratory rate, and the white cell count (x10^9/L).
VITALS = {
    "neonate": ((120, 185), (60, 85), (35, 55), (35, 70), (6.0, 28.0)),
    "infant": ((105, 175), (75, 100), (45, 65), (28, 55), (5.5, 24.0)),
    "child": ((80, 150), (90, 115), (55, 75), (18, 35), (4.5, 22.0)),
    "adolescent": ((60, 130), (100, 135), (60, 85), (14, 28), (4.0, 22.0)),
    "adult": ((60, 135), (90, 170), (50, 100), (12, 30), (4.0, 22.0)),
    "older adult": ((55, 130), (95, 180), (50, 100), (12, 30), (4.0, 22.0)),
}
FEBRILE = {"community-acquired pneumonia", "acute appendicitis", "bacterial meningitis", "Kawasaki disease",
           "tuberculous spondylitis", "sarcoidosis"}  # fmt: skip
OUTCOMES = [
    "recovered fully and was discharged after {n} days",
    "improved steadily and went home after {n} days",
    "had an uneventful recovery and was discharged after {n} days",
    "was discharged after {n} days and was well at follow-up three months later",
]

FIELDS = ["patient_id", "patient_uid", "PMID", "file_path", "title", "patient", "age", "gender",
          "relevant_articles", "similar_patients"]  # fmt: skip


def _band(years: float) -> str:
    return age_band(years) or "adult"


def _history_group(band: str, years: float) -> str:
    if band == "child" and years < 3:
        return "infant"  # a toddler's history reads like an infant's
    return "young adult" if band == "adult" and years < 40 else band


def _age(rng: random.Random, youngest: float, oldest: float) -> list[list[float | str]]:
    """An age in the dataset's [[value, unit], ...] form, in the units a report would use for it."""
    years = rng.uniform(youngest, oldest)
    if years < 28 / DAYS_PER_YEAR:
        return [[float(max(1, round(years * DAYS_PER_YEAR))), "day"]]
    if years < 8 * 7 / DAYS_PER_YEAR:
        return [[float(max(4, round(years * DAYS_PER_YEAR / 7))), "week"]]
    if years < 2:
        return [[float(max(2, min(23, round(years * 12)))), "month"]]
    whole = int(years)
    if whole < 6 and rng.random() < 0.5:
        months = rng.randint(1, 11)
        return [[float(whole), "year"], [float(months), "month"]]
    return [[float(whole), "year"]]


def _years(age: list[list[float | str]]) -> float:
    return sum(float(v) * YEARS_PER_UNIT[str(u)] for v, u in age)


def _age_words(age: list[list[float | str]]) -> str:
    words = " and ".join(f"{int(float(v))}-{u}" for v, u in age) + "-old"
    article = "An" if words.startswith(("8", "11-", "18-")) else "A"
    return f"{article} {words}"


def _legacy_draws(rng: random.Random) -> None:
    """The draws earlier versions of the sample made for an age and a summary, made still: so every seed
    keeps its articles, their sizes, the uids and the sexes. What a summary says, and the age, come from
    the patient's own generator."""
    shape = rng.randrange(6)
    ranges = [[(18, 90)], [(1, 11)], [(1, 8), (1, 11)], [(1, 6)], [(1, 28)], [(2, 23)]][shape]
    ranges += [(0, 2), (0, 2), (1, 14), (0, 4), (0, 3)]  # man or boy, woman or girl, days, history, outcome
    for low, high in ranges:
        rng.randint(low, high)
    for floats, ints in (((36.5, 39.8), [(70, 135), (90, 160), (50, 95)]), ((4, 22), [(3, 280), (3, 21)])):
        rng.uniform(*floats)
        for low, high in ints:
            rng.randint(low, high)


def _summary(rng: random.Random, condition: tuple[str, str, str, str], age: list, sex: str) -> str:
    name, symptoms, finding, treatment = condition
    years = _years(age)
    band = _band(years)
    person = rng.choice(PERSONS[band][sex])
    unit, fewest, most = PROFILES[name][1]
    lasted = rng.randint(fewest, most)
    if unit == "day":  # never longer than the patient has lived
        lasted = max(1, min(lasted, int(years * DAYS_PER_YEAR) // 2))
    history = rng.choice(HISTORIES[_history_group(band, years)])
    (hr_lo, hr_hi), (sys_lo, sys_hi), (dia_lo, dia_hi), (rr_lo, rr_hi), (wbc_lo, wbc_hi) = VITALS[band]
    systolic = rng.randint(sys_lo, sys_hi)
    diastolic = min(rng.randint(dia_lo, dia_hi), systolic - 25)
    low, high = (37.8, 39.8) if name in FEBRILE else (36.5, 37.6)
    vitals = (
        f"temperature {rng.uniform(low, high):.1f} °C, heart rate {rng.randint(hr_lo, hr_hi)} beats per minute, "
        f"respiratory rate {rng.randint(rr_lo, rr_hi)} per minute, blood pressure {systolic}/{diastolic} mmHg"
    )
    place = "the emergency department" if band in ("adult", "older adult") else "the paediatric emergency department"
    pronoun = "He" if sex == "M" else "She"
    outcome = rng.choice(OUTCOMES).format(n=rng.randint(3, 21))
    return (
        f"{_age_words(age)} {person} presented to {place} with {symptoms} "
        f"for {lasted} {unit}{'s' if lasted != 1 else ''}. {pronoun} {history}. On examination: {vitals}. "
        f"Laboratory tests showed a white cell count of {rng.uniform(wbc_lo, wbc_hi):.1f} x10^9/L and a C-reactive "
        f"protein of {rng.randint(3, 280)} mg/L. Imaging and further investigations revealed {finding}. "
        f"A diagnosis of {name} was made. The patient was treated with {treatment}. The patient {outcome}. "
        f"This case illustrates the typical presentation of {name} and the value of early recognition."
    )  # fmt: skip


def generate_rows(articles: int = 24, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for a in range(articles):
        condition = CONDITIONS[a % len(CONDITIONS)]
        pmc = 9000000 + a * 17
        pmid = str(39000000 + a * 31)
        patients = rng.randint(1, 4)
        uids = [f"{pmc}-{i + 1}" for i in range(patients)]
        for uid in uids:
            sex = rng.choice("MF")
            _legacy_draws(rng)
            own = random.Random(f"{seed}:{uid}")  # the patient's own generator: what the summary says
            age = _age(own, *PROFILES[condition[0]][0])
            similar = {other: 2 for other in uids if other != uid}
            rows.append({
                "patient_id": str(len(rows)),
                "patient_uid": uid,
                "PMID": pmid,
                "file_path": f"synthetic/PMC{pmc}.xml",
                "title": f"{condition[0].capitalize()}: {SYNTHETIC_TITLE} ({a + 1})",
                "patient": _summary(own, condition, age, sex),
                "age": repr(age),
                "gender": sex,
                "relevant_articles": repr({pmid: 2}),
                "similar_patients": repr(similar),
            })  # fmt: skip
    rows.append({**rows[3], "patient_id": str(len(rows))})  # a repeated uid: quarantined, not indexed
    return rows


def write_sample(path: Path, articles: int = 24, seed: int = 7) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(generate_rows(articles, seed))
    return path
