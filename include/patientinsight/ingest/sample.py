"""A small synthetic sample in the PMC-Patients v1 CSV format, for the run command and the tests.

The text is generated from templates, not taken from real reports, so it can ship with the project.
Patients of one synthetic article share a condition and list each other as similar (score 2), as
in-article links do in the real dataset. One row repeats a uid, to show quarantine at work.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

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
        "five days of fever, conjunctival injection, a strawberry tongue and a rash",
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

# (value, unit) pairs that exercise every unit the dataset uses.
AGE_SHAPES = [
    lambda r: [[float(r.randint(18, 90)), "year"]],
    lambda r: [[float(r.randint(1, 11)), "month"]],
    lambda r: [[float(r.randint(1, 8)), "year"], [float(r.randint(1, 11)), "month"]],
    lambda r: [[float(r.randint(1, 6)), "week"]],
    lambda r: [[float(r.randint(1, 28)), "day"]],
    lambda r: [[float(r.randint(2, 23)), "hour"]],
]

FIELDS = ["patient_id", "patient_uid", "PMID", "file_path", "title", "patient", "age", "gender",
          "relevant_articles", "similar_patients"]  # fmt: skip


def _age_words(age: list[list[float | str]]) -> str:
    return " and ".join(f"{int(float(v))}-{u}" for v, u in age) + "-old"


def _summary(rng: random.Random, condition: tuple[str, str, str, str], age: list, sex: str) -> str:
    name, symptoms, finding, treatment = condition
    person = {
        "M": rng.choice(["man", "male patient", "boy"]),
        "F": rng.choice(["woman", "female patient", "girl"]),
    }[sex]
    days = rng.randint(1, 14)
    history = rng.choice(
        [
            "no relevant past medical history",
            "hypertension and hyperlipidaemia",
            "type 2 diabetes mellitus",
            "a history of smoking",
            "asthma since childhood",
        ]
    )
    outcome = rng.choice(
        [
            "recovered fully and was discharged",
            "improved steadily and was discharged",
            "had an uneventful recovery",
            "was well at follow-up three months later",
        ]
    )
    vitals = (
        f"temperature {rng.uniform(36.5, 39.8):.1f} °C, heart rate {rng.randint(70, 135)} beats per minute, "
        f"blood pressure {rng.randint(90, 160)}/{rng.randint(50, 95)} mmHg"
    )
    return (
        f"A {_age_words(age)} {person} presented to the emergency department with {symptoms} "
        f"for {days} days. The patient had {history}. On examination: {vitals}. "
        f"Laboratory tests showed a white cell count of {rng.uniform(4, 22):.1f} x10^9/L and a C-reactive "
        f"protein of {rng.randint(3, 280)} mg/L. Imaging and further investigations revealed {finding}. "
        f"A diagnosis of {name} was made. The patient was treated with {treatment}. "
        f"Over the following {rng.randint(3, 21)} days the patient {outcome}. "
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
            age = rng.choice(AGE_SHAPES)(rng)
            similar = {other: 2 for other in uids if other != uid}
            rows.append({
                "patient_id": str(len(rows)),
                "patient_uid": uid,
                "PMID": pmid,
                "file_path": f"synthetic/PMC{pmc}.xml",
                "title": f"{condition[0].capitalize()}: a synthetic case report series ({a + 1})",
                "patient": _summary(rng, condition, age, sex),
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
