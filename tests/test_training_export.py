"""Feedback → SFT dataset (`teambot feedback export`), the answer scores and model activation.

Fast (no torch): a temp feedback store is seeded with realistic rated handbook answers, the
way the bots record them. `seed_feedback` is reused by the end-to-end training tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.answer import Answer, Source
from feedback.store import FeedbackStore
from teambot.cli import app
from core.settings import load_settings
from core import active_model as active
from training.export import ExportRefused, export, normalize_question, split_of
from training.metrics import citation_compliance, rouge_l, token_f1
from training.scrub import scrub

SYSTEM = (
    "You are teambot, the assistant of a team's internal knowledge base. Answer ONLY from the "
    "numbered documents in the user's message and cite them like [1]. If they do not contain the "
    'answer, reply exactly: "I don\'t know from the documents I have."'
)

DOCS = {
    "meals": ("Expenses and Reimbursement", "handbook/expenses.md", "Meals while travelling are reimbursed up to 45 EUR per day. Books and online courses related to your role, up to 600 EUR per year without approval."),
    "ledgerly": ("Expenses and Reimbursement", "handbook/expenses.md", "Submit every claim in Ledgerly within 30 days of the purchase. Attach a photo of the receipt; claims over 250 EUR also need your manager's approval in Ledgerly. Finance pays approved claims with the next monthly salary run, on the 25th."),
    "not_reimbursed": ("Expenses and Reimbursement", "handbook/expenses.md", "Alcohol, fines (parking or speeding), first-class travel and personal phone contracts are not reimbursed. If you are unsure, ask in #ask-finance before you buy."),
    "home_office": ("Expenses and Reimbursement", "handbook/expenses.md", "Home-office equipment: a one-time budget of 800 EUR for a chair, desk or monitor."),
    "rotation": ("On-call and Incident Response", "handbook/on-call.md", "Every engineering team runs a weekly on-call rotation. The rotation hands over every Monday at 10:00 CET, during the team stand-up."),
    "paging": ("On-call and Incident Response", "handbook/on-call.md", "Alerts page the primary on-call engineer through PagerTree. If the primary does not acknowledge a page within 15 minutes, it escalates to the secondary, and after another 15 minutes to the engineering manager."),
    "sev1": ("On-call and Incident Response", "handbook/on-call.md", "SEV1: customers cannot log in or lose data. Open an incident channel named #inc-YYYYMMDD-short-name, page the incident commander and post a status page update within 30 minutes."),
    "postmortem": ("On-call and Incident Response", "handbook/on-call.md", "Write a blameless postmortem within five working days of every SEV1 and SEV2. The on-call engineer receives a 150 EUR allowance per week of on-call duty."),
    "vacation": ("Vacation and Time Off", "handbook/time-off.md", "Full-time employees get 28 days of paid vacation per calendar year, plus public holidays of the country they work in. Part-time employees get a pro-rata share."),
    "booking": ("Vacation and Time Off", "handbook/time-off.md", "Book vacation in HeyHR at least two weeks ahead for trips longer than three days, and tell your team in its channel. Your manager approves requests in HeyHR within three working days."),
    "carry": ("Vacation and Time Off", "handbook/time-off.md", "Up to 5 unused vacation days carry over into the next year and must be taken before March 31st. Days beyond that expire."),
    "sick": ("Vacation and Time Off", "handbook/time-off.md", "If you are ill, tell your manager before 10:00 and record the day in HeyHR. From the fourth consecutive sick day you need a doctor's note."),
    "parental": ("Vacation and Time Off", "handbook/time-off.md", "Northwind Labs tops up statutory parental leave to full pay for the first 16 weeks, for every parent."),
    "laptops": ("Security Basics", "handbook/security.md", "Lock your screen whenever you leave your laptop; screens lock automatically after 5 minutes of inactivity. Report a lost or stolen laptop to security@northwind.example within one hour, day or night."),
    "2fa": ("Security Basics", "handbook/security.md", "Two-factor authentication with a hardware key (YubiKey) is required for Google Workspace, GitHub and the AWS console. IT hands out two keys per person: keep the backup key at home."),
    "prod_access": ("Security Basics", "handbook/security.md", "Access to production databases is granted for 8 hours at a time through the access portal, with a ticket number as the reason. Every session is recorded."),
    "office": ("Office Guide: Lisbon", "handbook/office.txt", "The Lisbon office is on the 4th floor of Rua da Prata 120. The building opens at 07:30 and closes at 20:00 on working days; your badge works on weekends for the 4th floor only."),
    "lunch": ("Office Guide: Lisbon", "handbook/office.txt", "Lunch is provided on Tuesdays and Thursdays. Tell the office manager about dietary requirements in #office-lisbon by Monday noon."),
    "rooms": ("Office Guide: Lisbon", "handbook/office.txt", "Meeting rooms are booked through Google Calendar. The large room Tagus seats 14 people and has video conferencing; the two phone booths cannot be booked."),
    "wifi": ("Office Guide: Lisbon", "handbook/office.txt", "Guests must be registered at the front desk the day before their visit. Wi-Fi for guests is Northwind-Guest; the password changes every Monday and is pinned in #office-lisbon."),
    "windows": ("Deploying to Production", "handbook/deploys.html", "Deploys to production are allowed Monday to Thursday between 09:00 and 16:00 CET. There is a deploy freeze from December 20th to January 3rd; emergency fixes during the freeze need approval from the VP of Engineering."),
    "promote": ("Deploying to Production", "handbook/deploys.html", "Production deploys are promoted from staging with the /shipyard promote command in the #deploys channel. Two engineers must approve a promotion: the author and one reviewer from the owning team."),
    "rollback": ("Deploying to Production", "handbook/deploys.html", "Roll back with /shipyard rollback SERVICE. A rollback takes about four minutes and does not need approval."),
    "buddy": ("Onboarding: Your First Week", "handbook/onboarding.md", "Every new hire gets an onboarding buddy from another team. Your buddy meets you for coffee on day one and checks in every Friday during your first two months."),
    "first_week": ("Onboarding: Your First Week", "handbook/onboarding.md", "By Friday you should have shipped one small change to production with your team, read the on-call guide, and booked a 30-minute intro with each person on your team."),
    "long": ("Security Basics", "handbook/security.md", "Full-disk encryption is mandatory and enabled by IT. " * 120),
}

# (question, documents, answer, votes): a vote is (user, +1/-1) or (user, -1, correction);
# votes are cast in order, so a later vote of the same user replaces the earlier one.
FEEDBACK = [
    ("How much can I spend on meals when travelling?", ["meals"], "Meals while travelling are reimbursed up to 45 EUR per day [1].", [("U1", 1)]),
    ("How do I submit an expense claim?", ["ledgerly"], "Submit the claim in Ledgerly within 30 days of the purchase, with a photo of the receipt [1].", [("U1", 1)]),
    ("Do expense claims need approval?", ["ledgerly"], "Claims over 250 EUR need your manager's approval in Ledgerly [1].", [("U2", 1)]),
    ("When are approved expense claims paid?", ["ledgerly"], "Finance pays approved claims with the next monthly salary run, on the 25th [1].", [("U3", 1)]),
    ("What is the home office budget?", ["home_office", "meals"], "There is a one-time budget of 800 EUR for a chair, desk or monitor [1].", [("U1", 1)]),
    ("When does the on-call rotation hand over?", ["rotation"], "The rotation hands over every Monday at 10:00 CET, during the team stand-up [1].", [("U2", 1)]),
    ("What happens if the primary on-call doesn't acknowledge a page?", ["paging"], "After 15 minutes the page escalates to the secondary, and after another 15 minutes to the engineering manager [1].", [("U1", 1)]),
    ("How should I name the incident channel for a SEV1?", ["sev1"], "Name it #inc-YYYYMMDD-short-name [1].", [("U4", 1)]),
    ("When is the postmortem due?", ["postmortem"], "Within five working days of every SEV1 and SEV2 [1].", [("U2", 1)]),
    ("Is there an allowance for being on call?", ["postmortem"], "Yes, 150 EUR per week of on-call duty [1].", [("U3", 1)]),
    ("How many vacation days do I get?", ["vacation"], "Full-time employees get 28 days of paid vacation per year plus public holidays [1].", [("U1", 1)]),
    ("Can I carry over unused vacation days?", ["carry"], "Up to 5 unused days carry over and must be taken before March 31st [1].", [("U2", 1)]),
    ("When do I need a doctor's note?", ["sick"], "From the fourth consecutive sick day [1].", [("U3", 1)]),
    ("How long is parental leave paid in full?", ["parental"], "Statutory parental leave is topped up to full pay for the first 16 weeks, for every parent [1].", [("U4", 1)]),
    ("When does my screen lock automatically?", ["laptops"], "Screens lock automatically after 5 minutes of inactivity [1].", [("U1", 1)]),
    ("How long does production database access last?", ["prod_access"], "Access is granted for 8 hours at a time through the access portal, with a ticket number [1].", [("U5", 1)]),
    ("When is the Lisbon office open?", ["office"], "The building opens at 07:30 and closes at 20:00 on working days [1].", [("U2", 1)]),
    ("Which days is lunch provided in Lisbon?", ["lunch"], "Lunch is provided on Tuesdays and Thursdays [1].", [("U3", 1)]),
    ("When can we deploy to production?", ["windows", "promote"], "Monday to Thursday between 09:00 and 16:00 CET [1].", [("U1", 1)]),
    ("How do I roll back a service?", ["rollback"], "Run /shipyard rollback SERVICE; it takes about four minutes and needs no approval [1].", [("U4", 1)]),
    ("Who has to approve a production promotion?", ["promote"], "Two engineers: the author and one reviewer from the owning team [1].", [("U5", 1)]),
    ("What does my onboarding buddy do?", ["buddy"], "Your buddy meets you for coffee on day one and checks in every Friday for two months [1].", [("U2", 1)]),
    ("how many VACATION days do i get??", ["vacation"], "You get 28 days of paid vacation per calendar year, plus public holidays [1].", [("U5", 1)]),
    # 👎 with a correction: the correction becomes the answer to learn.
    ("Can I expense a bottle of wine at a team dinner?", ["not_reimbursed"], "Yes, team dinners are reimbursed.", [("U1", -1, "No. Alcohol is not reimbursed [1].")]),
    ("Is there a deploy freeze at the end of the year?", ["windows"], "No, deploys are allowed all year.", [("U2", -1, "Yes, from December 20th to January 3rd; emergency fixes need approval from the VP of Engineering [1].")]),
    ("Who do I tell if my laptop is stolen?", ["laptops"], "Tell your manager next week.", [("U3", -1, "Report it to security@northwind.example within one hour, day or night [1].")]),
    # 👎 without a correction: excluded.
    ("What is the guest Wi-Fi password?", ["wifi"], "The password is northwind123.", [("U1", -1)]),
    ("How many people fit in the Tagus room?", ["rooms"], "Tagus seats 40 people.", [("U4", -1)]),
    # Tie: one 👍, one 👎 — excluded.
    ("How many YubiKeys do I get?", ["2fa"], "IT hands out two keys per person [1].", [("U1", 1), ("U2", -1)]),
    # A changed vote: the user's last vote (👍) is the one that counts.
    ("How far ahead should I book a vacation?", ["booking"], "At least two weeks ahead in HeyHR for trips longer than three days [1].", [("U3", -1), ("U3", 1)]),
    # Majority 👍 (2 against 1).
    ("Can I book a phone booth in the Lisbon office?", ["rooms"], "No, the two phone booths cannot be booked [1].", [("U1", 1), ("U2", 1), ("U3", -1)]),
    # Majority 👎 with a correction from one of the downvoters.
    ("What should I get done in my first week?", ["first_week"], "Read the handbook.", [("U1", 1), ("U2", -1, "Ship one small change to production, read the on-call guide and book a 30-minute intro with each teammate [1]."), ("U3", -1)]),
    # Personal data pasted into a question: scrubbed.
    ("My phone is +351 912 345 678 and our bot token is xoxb-123456789012-abcdefABCDEF, do I need 2FA for GitHub?", ["2fa"], "Yes, GitHub requires two-factor authentication with a hardware key (YubiKey) [1].", [("U5", 1)]),
    # Longer than the training context: dropped.
    ("Is disk encryption mandatory on laptops?", ["long"], "Yes, full-disk encryption is mandatory and enabled by IT [1].", [("U1", 1)]),
    # A correct abstention is worth learning too.
    ("What is our share price today?", ["meals"], "I don't know from the documents I have.", [("U2", 1)]),
]


def render_prompt(question: str, docs: list[str]) -> tuple[list[dict], str]:
    blocks = [
        f'<document number="{n}" title="{DOCS[d][0]}">\n{DOCS[d][2]}\n</document>' for n, d in enumerate(docs, 1)
    ]
    context = "\n".join(blocks)
    user = f"Documents:\n{context}\n\nQuestion: {question}\nAnswer briefly, citing the documents like [1]."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], context


def seed_feedback(store: FeedbackStore, feedback=FEEDBACK) -> dict[str, str]:
    """Record and rate every answer; returns question → answer id."""
    ids = {}
    for question, docs, text, votes in feedback:
        prompt, context = render_prompt(question, docs)
        retrieved = [
            Source(number=n, title=DOCS[d][0], path=DOCS[d][1], snippet=DOCS[d][2][:300], chunk_id=f"{d}-0", score=0.8)
            for n, d in enumerate(docs, 1)
        ]
        answer = Answer(
            question=question, text=text, sources=retrieved[:1], model="teambot-dev", collection="Handbook",
            retrieved=retrieved, context=context, prompt=prompt,
        )
        store.record_answer(answer, platform="slack", user_id="asker", channel="C1", thread=answer.id)
        for vote in votes:
            user, value, *correction = vote
            store.rate(answer.id, platform="slack", user_id=user, value=value, correction=correction[0] if correction else None)
        ids[question] = answer.id
    return ids


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("export")
    # An empty cache: lengths are counted with the char heuristic, whatever was trained before.
    settings = load_settings(
        data_dir=data_dir, cache_dir=data_dir / "cache", train_base_model="gemma3-270m",
        train_max_tokens=512, train_min_examples=10,
    )
    store = FeedbackStore.from_settings(settings)
    seed_feedback(store)
    return settings, store


@pytest.fixture(scope="module")
def exported(seeded):
    settings, store = seeded
    return export(settings, store)


def _by_question(examples: list[dict]) -> dict[str, dict]:
    return {e["question"]: e for e in examples}


def test_export_keeps_upvoted_and_corrected_answers_and_counts_the_rest(exported):
    assert exported.rated == len(FEEDBACK)
    assert dict(exported.dropped) == {"downvoted_no_correction": 2, "tie": 1, "duplicate": 1, "too_long": 1}
    assert exported.kept == len(FEEDBACK) - 5
    examples = _by_question(exported.train + exported.eval)
    assert "What is the guest Wi-Fi password?" not in examples  # 👎 without correction
    assert "How many YubiKeys do I get?" not in examples  # tie
    assert "Is disk encryption mandatory on laptops?" not in examples  # too long
    assert examples["How far ahead should I book a vacation?"]["kind"] == "upvoted"  # changed vote
    assert examples["Can I book a phone booth in the Lisbon office?"]["kind"] == "upvoted"  # 2 to 1
    assert examples["What is our share price today?"]["messages"][-1]["content"] == "I don't know from the documents I have."


def test_examples_are_the_chat_the_model_saw_plus_the_answer_to_learn(exported):
    examples = _by_question(exported.train + exported.eval)
    upvoted = examples["How do I submit an expense claim?"]["messages"]
    prompt, _ = render_prompt("How do I submit an expense claim?", ["ledgerly"])
    assert upvoted[:-1] == prompt
    assert "Ledgerly within 30 days" in upvoted[1]["content"]  # retrieved context in the user turn
    assert upvoted[-1] == {
        "role": "assistant",
        "content": "Submit the claim in Ledgerly within 30 days of the purchase, with a photo of the receipt [1].",
    }
    corrected = examples["Can I expense a bottle of wine at a team dinner?"]
    assert corrected["kind"] == "corrected"
    assert corrected["messages"][-1]["content"] == "No. Alcohol is not reimbursed [1]."
    majority_down = examples["What should I get done in my first week?"]["messages"][-1]["content"]
    assert majority_down.startswith("Ship one small change")


def test_near_duplicate_questions_keep_the_latest_answer(exported):
    vacation = [e for e in exported.train + exported.eval if normalize_question(e["question"]) == "how many vacation days do i get"]
    assert len(vacation) == 1
    assert vacation[0]["messages"][-1]["content"].startswith("You get 28 days")


def test_personal_data_and_tokens_are_scrubbed(exported):
    text = json.dumps(exported.train + exported.eval)
    assert "xoxb-" not in text and "912 345 678" not in text
    assert "security@northwind.example" not in text
    stolen = _by_question(exported.train + exported.eval)["Who do I tell if my laptop is stolen?"]
    assert stolen["messages"][-1]["content"] == "Report it to [email] within one hour, day or night [1]."
    # Facts that look like numbers survive.
    assert "09:00 and 16:00 CET" in text and "45 EUR" in text


def test_split_is_deterministic_by_question_and_written_as_jsonl_and_dataset(seeded, exported):
    from datasets import load_from_disk

    settings, store = seeded
    assert exported.train and exported.eval
    assert 0.1 <= len(exported.eval) / exported.kept <= 0.35
    for split in ("train", "eval"):
        for example in getattr(exported, split):
            assert split_of(example["question"]) == split
    again = export(settings, store)
    assert [e["question"] for e in again.eval] == [e["question"] for e in exported.eval]

    out = exported.out_dir
    lines = (out / "train.jsonl").read_text().splitlines()
    assert len(lines) == len(exported.train)
    first = json.loads(lines[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    dataset = load_from_disk(str(out / "dataset"))
    assert (dataset["train"].num_rows, dataset["eval"].num_rows) == (len(exported.train), len(exported.eval))
    assert dataset["eval"][0]["messages"] == exported.eval[0]["messages"]
    assert json.loads((out / "summary.json").read_text())["kept"] == exported.kept


def test_export_refuses_below_the_minimum(seeded):
    settings, store = seeded
    with pytest.raises(ExportRefused) as refused:
        export(settings.model_copy(update={"data_dir": settings.data_dir / "other"}), store, min_examples=100)
    assert "only 30 usable examples (need at least 100" in str(refused.value)
    assert not (settings.data_dir / "other" / "sft").exists()


def test_cli_export_prints_a_summary_and_refuses_with_nonzero_exit(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    seed_feedback(store, FEEDBACK[:6])
    env = {"TEAMBOT_DATA_DIR": str(tmp_path), "TEAMBOT_TRAIN_BASE_MODEL": "gemma3-270m", "TEAMBOT_TRAIN_MIN_EXAMPLES": "20"}
    runner = CliRunner()
    refused = runner.invoke(app, ["feedback", "export"], env=env)
    assert refused.exit_code == 1
    assert "only 6 usable examples (need at least 20" in refused.output
    assert "kept: 6" in refused.output
    done = runner.invoke(app, ["feedback", "export", "--min-examples", "5"], env=env)
    assert done.exit_code == 0, done.output
    assert "kept: 6" in done.output and (tmp_path / "sft" / "train.jsonl").is_file()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail jane.doe@northwind.example or call +44 20 7946 0958.", "Mail [email] or call [phone]."),
        ("export SLACK_BOT_TOKEN=xoxb-1111-2222-abcdefghij", "export SLACK_BOT_TOKEN=[secret]"),
        ("key sk-proj-abcdefghijklmnopqrstuv and AKIAABCDEFGHIJKLMNOP", "key [secret] and [secret]"),
        ("api_key: 9f8e7d6c5b4a", "api_key: [secret]"),
        ("Claims over 250 EUR, paid on 2026-11-25 at 10:00, room 4.12", "Claims over 250 EUR, paid on 2026-11-25 at 10:00, room 4.12"),
    ],
)
def test_scrub(text, expected):
    assert scrub(text) == expected


def test_answer_scores():
    reference = "Meals are reimbursed up to 45 EUR per day [1]."
    assert token_f1(reference, reference) == rouge_l(reference, reference) == 1.0
    assert token_f1("Up to 45 EUR per day [2].", reference) == pytest.approx(2 * 1 * (6 / 9) / (1 + 6 / 9))  # all 6 words shared, 6 of 9 recalled
    # Same words, different order: F1 ignores order, ROUGE-L does not.
    shuffled = "day per EUR 45 to up reimbursed are meals"
    assert token_f1(shuffled, reference) == 1.0 and rouge_l(shuffled, reference) < 0.3
    assert token_f1("Ask finance.", reference) == 0.0
    assert citation_compliance(["It is 45 EUR [1].", "45 EUR."], [reference, reference]) == 0.5
    assert citation_compliance(["anything"], ["I don't know."]) is None


def test_active_model_switches_and_rolls_back(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    assert active.active_model(settings) == settings.model
    assert active.set_active_model(settings, "teambot-ft-a") == settings.model
    active.set_active_model(settings, "teambot-ft-b")
    assert active.active_model(settings) == "teambot-ft-b"
    assert active.rollback(settings) == "teambot-ft-a"
    assert active.active_model(settings) == "teambot-ft-a"
    assert active.rollback(settings) == settings.model
    assert active.active_model(settings) == settings.model
    assert active.rollback(settings) == settings.model  # nothing left: stays on the configured model
    (tmp_path / "active_model.json").write_text("{not json")
    assert active.active_model(settings) == settings.model  # a broken file never breaks answering


def test_cli_publish_rollback_reports_the_active_model(tmp_path):
    settings = load_settings(data_dir=tmp_path)
    active.set_active_model(settings, "teambot-ft-x")
    result = CliRunner().invoke(app, ["publish", "--rollback"], env={"TEAMBOT_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert f"active model: {settings.model}" in result.output
    assert not Path(tmp_path / "active_model.json").exists()


def test_cli_verbs_explain_what_is_missing(tmp_path):
    env = {"TEAMBOT_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    missing_run = runner.invoke(app, ["eval", "--run", "nope"], env=env)
    assert missing_run.exit_code == 1 and "no training run 'nope'" in missing_run.output
    no_runs = runner.invoke(app, ["publish", "--run", "latest"], env=env)
    assert no_runs.exit_code == 1 and "run `teambot train` first" in no_runs.output
    no_run = runner.invoke(app, ["publish"], env=env)
    assert no_run.exit_code == 1 and "--run RUN" in no_run.output
