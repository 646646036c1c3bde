"""Generated handbook-like documents, so benchmarks can run at any size with realistic text.

Each document is Markdown: a `#` title, an intro, then `##` sections of a few paragraphs and
the odd bullet list, about policies, tools, deadlines and people, drawn from topic vocabularies
with a seeded RNG (the same seed gives the same corpus). Vocabulary varies between topics and
documents, so BM25 and the embeddings see text that is neither identical nor random noise.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

TOPICS = {
    "Expenses": (["receipt", "claim", "reimbursement", "invoice", "mileage", "per diem", "corporate card", "budget"],
                 ["Ledgerly", "the finance portal", "the expense app"], ["submit", "approve", "attach", "reconcile"]),
    "Travel": (["flight", "hotel", "train ticket", "visa", "itinerary", "booking", "rental car", "lounge"],
               ["TripDesk", "the travel agency", "the booking tool"], ["book", "cancel", "upgrade", "pre-approve"]),
    "Security": (["laptop", "password", "badge", "phishing email", "VPN", "two-factor code", "screen lock", "secret"],
                 ["Vaultwarden", "the security channel", "the device manager"], ["report", "rotate", "encrypt", "revoke"]),
    "On-call": (["page", "incident", "runbook", "escalation", "postmortem", "rotation", "alert", "status page"],
                ["PagerLoop", "the incident bot", "the on-call calendar"], ["acknowledge", "escalate", "hand over", "resolve"]),
    "Time off": (["vacation day", "sick leave", "public holiday", "parental leave", "sabbatical", "doctor's note"],
                 ["HeyHR", "the people team", "the leave calendar"], ["request", "carry over", "record", "cancel"]),
    "Deploys": (["release", "rollback", "feature flag", "canary", "freeze", "migration", "build", "hotfix"],
                ["ShipIt", "the deploy pipeline", "the release channel"], ["promote", "roll back", "tag", "verify"]),
    "Hiring": (["candidate", "interview", "scorecard", "offer", "referral", "take-home task", "debrief"],
               ["TalentHub", "the recruiting team", "the interview planner"], ["schedule", "score", "refer", "decline"]),
    "Facilities": (["desk", "meeting room", "parking spot", "locker", "visitor badge", "printer", "kitchen"],
                   ["RoomFinder", "the front desk", "the office manager"], ["reserve", "release", "register", "clean"]),
    "Benefits": (["gym membership", "pension plan", "health insurance", "learning budget", "bike lease", "eye test"],
                 ["PerkPort", "the benefits provider", "the people team"], ["enrol", "claim", "opt out", "renew"]),
}
PEOPLE = ["your manager", "the team lead", "the finance team", "the people team", "your onboarding buddy",
          "the security officer", "the office manager", "the incident commander", "a director"]
TIMES = ["within 30 days", "by Friday noon", "before the end of the quarter", "within two working days",
         "every Monday at 10:00", "at least a week in advance", "on the first day", "within 15 minutes"]
AMOUNTS = ["25 EUR", "60 EUR", "250 EUR", "1,000 EUR", "3 days", "5 days", "10 working days", "two weeks"]
CONNECTIVES = ["Note that", "In most cases", "As a rule,", "For example,", "If in doubt,", "Since last year,",
               "Unless stated otherwise,", "In practice,"]
FILLER = ["clearly", "promptly", "in writing", "with a short note", "for audit purposes", "as agreed",
          "where possible", "without exception", "per team", "on request"]


def _sentence(rng: random.Random, nouns: list[str], tools: list[str], verbs: list[str]) -> str:
    noun, other = rng.sample(nouns, 2)
    forms = [
        f"{rng.choice(verbs).capitalize()} every {noun} in {rng.choice(tools)} {rng.choice(TIMES)}.",
        f"A {noun} above {rng.choice(AMOUNTS)} needs approval from {rng.choice(PEOPLE)}.",
        f"{rng.choice(CONNECTIVES)} {rng.choice(PEOPLE)} can {rng.choice(verbs)} a {noun} {rng.choice(FILLER)}.",
        f"Each {noun} is linked to its {other} so that {rng.choice(PEOPLE)} can check it {rng.choice(TIMES)}.",
        f"Do not {rng.choice(verbs)} a {noun} outside {rng.choice(tools)}; ask {rng.choice(PEOPLE)} instead.",
        f"The limit for a {noun} is {rng.choice(AMOUNTS)}, and any {other} must be kept {rng.choice(FILLER)}.",
    ]
    return rng.choice(forms)


def document(rng: random.Random, number: int) -> tuple[str, str]:
    """(file stem, Markdown text) of one generated handbook page."""
    topic = rng.choice(list(TOPICS))
    nouns, tools, verbs = TOPICS[topic]
    aspect = rng.choice(nouns)
    title = f"{topic}: {aspect} guidelines ({number})"
    parts = [f"# {title}", "", " ".join(_sentence(rng, nouns, tools, verbs) for _ in range(rng.randint(2, 4)))]
    for _ in range(rng.randint(3, 6)):
        parts += ["", f"## {rng.choice(verbs).capitalize()} a {rng.choice(nouns)}", ""]
        for _ in range(rng.randint(1, 3)):
            parts += [" ".join(_sentence(rng, nouns, tools, verbs) for _ in range(rng.randint(3, 7))), ""]
        if rng.random() < 0.3:
            parts += [f"- {_sentence(rng, nouns, tools, verbs)}" for _ in range(rng.randint(2, 4))] + [""]
    stem = f"{topic.lower().replace(' ', '-')}-{number:05d}"
    return stem, "\n".join(parts).strip() + "\n"


def write_docs(folder: Path, count: int, seed: int = 7) -> list[Path]:
    """Write `count` generated Markdown documents into `folder`; their paths."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        stem, text = document(rng, n)
        path = folder / f"{stem}.md"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def chunks(count: int, seed: int = 11, words: int = 120) -> list[dict]:
    """`count` chunk records (content and the metadata our store keeps), about `words` long."""
    rng = random.Random(seed)
    out: list[dict] = []
    number = 0
    while len(out) < count:
        stem, text = document(rng, number)
        title = text.splitlines()[0][2:]
        body = [w for w in text.split() if not w.startswith("#")]
        for position, start in enumerate(range(0, len(body), words)):
            out.append({
                "content": " ".join(body[start:start + words]), "source": f"/generated/{stem}.md",
                "title": title, "section": "", "position": position, "page_number": 1, "file_type": "markdown",
                "content_hash": f"{seed:04d}{number:012d}", "url": "",
            })
        number += 1
    return out[:count]


def unit_vectors(count: int, dim: int, seed: int = 13) -> np.ndarray:
    """Random unit vectors: fill for the vector index that costs no embedding time."""
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
