"""Rated handbook answers, recorded the way the bots record them, for the training tests.

Prompts are rendered by the answering pipeline's own prompt module (pipeline/prompts.py) from
Haystack Documents, so the examples are the chat the model would have seen. The handbook is
split into pages as a wiki would be; several questions cite the same page, two paraphrases
cite different pages, some answers are follow-ups in threads.
"""

from __future__ import annotations

from haystack import Document

from core.answer import Answer, Outcome, Source, Turn
from feedback.store import FeedbackStore
from pipeline.prompts import prompt_builder, render

# key: (title, path, text)
DOCS = {
    "meals": ("Expenses: limits", "handbook/expenses/limits.md", "Meals while travelling are reimbursed up to 45 EUR per day. Books and online courses related to your role, up to 600 EUR per year without approval."),
    "ledgerly": ("Expenses: claims", "handbook/expenses/claims.md", "Submit every claim in Ledgerly within 30 days of the purchase. Attach a photo of the receipt; claims over 250 EUR also need your manager's approval in Ledgerly. Finance pays approved claims with the next monthly salary run, on the 25th."),
    "not_reimbursed": ("Expenses: not reimbursed", "handbook/expenses/not-reimbursed.md", "Alcohol, fines (parking or speeding), first-class travel and personal phone contracts are not reimbursed. If you are unsure, ask in #ask-finance before you buy."),
    "home_office": ("Expenses: home office", "handbook/expenses/home-office.md", "Home-office equipment: a one-time budget of 800 EUR for a chair, desk or monitor."),
    "rotation": ("On-call: rotation", "handbook/on-call/rotation.md", "Every engineering team runs a weekly on-call rotation. The rotation hands over every Monday at 10:00 CET, during the team stand-up."),
    "paging": ("On-call: paging", "handbook/on-call/paging.md", "Alerts page the primary on-call engineer through PagerTree. If the primary does not acknowledge a page within 15 minutes, it escalates to the secondary, and after another 15 minutes to the engineering manager."),
    "sev1": ("Incidents: severity", "handbook/incidents/severity.md", "SEV1: customers cannot log in or lose data. Open an incident channel named #inc-YYYYMMDD-short-name, page the incident commander and post a status page update within 30 minutes."),
    "postmortem": ("Incidents: after an incident", "handbook/incidents/postmortems.md", "Write a blameless postmortem within five working days of every SEV1 and SEV2. The on-call engineer receives a 150 EUR allowance per week of on-call duty."),
    "vacation": ("Time off: vacation", "handbook/time-off/vacation.md", "Full-time employees get 28 days of paid vacation per calendar year, plus public holidays of the country they work in. Part-time employees get a pro-rata share."),
    "booking": ("Time off: booking", "handbook/time-off/booking.md", "Book vacation in HeyHR at least two weeks ahead for trips longer than three days, and tell your team in its channel. Your manager approves requests in HeyHR within three working days."),
    "carry": ("Time off: carry-over", "handbook/time-off/carry-over.md", "Up to 5 unused vacation days carry over into the next year and must be taken before March 31st. Days beyond that expire."),
    "sick": ("Time off: sick days", "handbook/time-off/sick.md", "If you are ill, tell your manager before 10:00 and record the day in HeyHR. From the fourth consecutive sick day you need a doctor's note."),
    "parental": ("Time off: parental leave", "handbook/time-off/parental.md", "Northwind Labs tops up statutory parental leave to full pay for the first 16 weeks, for every parent."),
    "laptops": ("Security: laptops", "handbook/security/laptops.md", "Lock your screen whenever you leave your laptop; screens lock automatically after 5 minutes of inactivity. Report a lost or stolen laptop to security@northwind.example within one hour, day or night."),
    "2fa": ("Security: two-factor", "handbook/security/2fa.md", "Two-factor authentication with a hardware key (YubiKey) is required for Google Workspace, GitHub and the AWS console. IT hands out two keys per person: keep the backup key at home."),
    "prod_access": ("Security: production access", "handbook/security/production-access.md", "Access to production databases is granted for 8 hours at a time through the access portal, with a ticket number as the reason. Every session is recorded."),
    "office": ("Lisbon office: building", "handbook/lisbon/building.txt", "The Lisbon office is on the 4th floor of Rua da Prata 120. The building opens at 07:30 and closes at 20:00 on working days; your badge works on weekends for the 4th floor only."),
    "lunch": ("Lisbon office: lunch", "handbook/lisbon/lunch.txt", "Lunch is provided on Tuesdays and Thursdays. Tell the office manager about dietary requirements in #office-lisbon by Monday noon."),
    "rooms": ("Lisbon office: rooms", "handbook/lisbon/rooms.txt", "Meeting rooms are booked through Google Calendar. The large room Tagus seats 14 people and has video conferencing; the two phone booths cannot be booked."),
    "wifi": ("Lisbon office: guests", "handbook/lisbon/guests.txt", "Guests must be registered at the front desk the day before their visit. Wi-Fi for guests is Northwind-Guest; the password changes every Monday and is pinned in #office-lisbon."),
    "windows": ("Deploys: when", "handbook/deploys/windows.html", "Deploys to production are allowed Monday to Thursday between 09:00 and 16:00 CET. There is a deploy freeze from December 20th to January 3rd; emergency fixes during the freeze need approval from the VP of Engineering."),
    "promote": ("Deploys: promotion", "handbook/deploys/promotion.html", "Production deploys are promoted from staging with the /shipyard promote command in the #deploys channel. Two engineers must approve a promotion: the author and one reviewer from the owning team."),
    "rollback": ("Deploys: rollback", "handbook/deploys/rollback.html", "Roll back with /shipyard rollback SERVICE. A rollback takes about four minutes and does not need approval."),
    "buddy": ("Onboarding: buddy", "handbook/onboarding/buddy.md", "Every new hire gets an onboarding buddy from another team. Your buddy meets you for coffee on day one and checks in every Friday during your first two months."),
    "first_week": ("Onboarding: first week", "handbook/onboarding/first-week.md", "By Friday you should have shipped one small change to production with your team, read the on-call guide, and booked a 30-minute intro with each person on your team."),
    "encryption": ("Security: disk encryption", "handbook/security/encryption.md", "Full-disk encryption is mandatory and enabled by IT."),
    "long": ("Security: disk encryption", "handbook/security/encryption.md", "Full-disk encryption is mandatory and enabled by IT. " * 120),
}

# (question, documents, answer, votes[, extra]): a vote is (user, +1/-1) or (user, -1, correction);
# votes are cast in order, so a later vote of the same user replaces the earlier one. extra:
# {"thread": [(question, answer), …]} earlier turns, {"outcome": …}, {"prompt": False} (recorded
# without its prompt, as very old records were).
FEEDBACK = [
    ("How much can I spend on meals when travelling?", ["meals"], "Meals while travelling are reimbursed up to 45 EUR per day [1].", [("U1", 1)]),
    ("Can I expense a book for work?", ["meals"], "Yes, books and online courses related to your role, up to 600 EUR per year without approval [1].", [("U2", 1)]),
    ("How do I submit an expense claim?", ["ledgerly"], "Submit the claim in Ledgerly within 30 days of the purchase, with a photo of the receipt [1].", [("U1", 1)]),
    ("Do expense claims need approval?", ["ledgerly"], "Claims over 250 EUR need your manager's approval in Ledgerly [1].", [("U2", 1)]),
    ("When are approved expense claims paid?", ["ledgerly"], "Finance pays approved claims with the next monthly salary run, on the 25th [1].", [("U3", 1)]),
    ("Are parking fines reimbursed?", ["not_reimbursed"], "No, parking and speeding fines are not reimbursed [1].", [("U4", 1)]),
    ("What is the home office budget?", ["home_office", "meals"], "There is a one-time budget of 800 EUR for a chair, desk or monitor [1].", [("U1", 1)]),
    ("When does the on-call rotation hand over?", ["rotation"], "The rotation hands over every Monday at 10:00 CET, during the team stand-up [1].", [("U2", 1)]),
    ("What happens if the primary on-call doesn't acknowledge a page?", ["paging"], "After 15 minutes the page escalates to the secondary, and after another 15 minutes to the engineering manager [1].", [("U1", 1)]),
    ("Which tool pages the on-call engineer?", ["paging"], "PagerTree pages the primary on-call engineer [1].", [("U3", 1)]),
    ("How should I name the incident channel for a SEV1?", ["sev1"], "Name it #inc-YYYYMMDD-short-name [1].", [("U4", 1)]),
    ("What counts as a SEV1?", ["sev1"], "A SEV1 is when customers cannot log in or lose data [1].", [("U5", 1)]),
    ("When is the postmortem due?", ["postmortem"], "Within five working days of every SEV1 and SEV2 [1].", [("U2", 1)]),
    ("Is there an allowance for being on call?", ["postmortem"], "Yes, 150 EUR per week of on-call duty [1].", [("U3", 1)]),
    ("How many vacation days do I get?", ["vacation"], "Full-time employees get 28 days of paid vacation per year plus public holidays [1].", [("U1", 1)]),
    ("Do part-time employees get vacation?", ["vacation"], "Yes, part-time employees get a pro-rata share of the vacation days [1].", [("U4", 1)]),
    ("Who approves my vacation request?", ["booking"], "Your manager approves it in HeyHR within three working days [1].", [("U5", 1)]),
    ("Can I carry over unused vacation days?", ["carry"], "Up to 5 unused days carry over and must be taken before March 31st [1].", [("U2", 1)]),
    ("When do I need a doctor's note?", ["sick"], "From the fourth consecutive sick day [1].", [("U3", 1)]),
    ("What do I do when I'm sick?", ["sick"], "Tell your manager before 10:00 and record the day in HeyHR [1].", [("U1", 1)]),
    ("How long is parental leave paid in full?", ["parental"], "Statutory parental leave is topped up to full pay for the first 16 weeks, for every parent [1].", [("U4", 1)]),
    ("When does my screen lock automatically?", ["laptops"], "Screens lock automatically after 5 minutes of inactivity [1].", [("U1", 1)]),
    ("Which services need a YubiKey?", ["2fa"], "Google Workspace, GitHub and the AWS console need a hardware key [1].", [("U2", 1)]),
    ("How long does production database access last?", ["prod_access"], "Access is granted for 8 hours at a time through the access portal, with a ticket number [1].", [("U5", 1)]),
    ("Are production database sessions recorded?", ["prod_access"], "Yes, every session is recorded [1].", [("U3", 1)]),
    ("When is the Lisbon office open?", ["office"], "The building opens at 07:30 and closes at 20:00 on working days [1].", [("U2", 1)]),
    ("Can I get into the Lisbon office on a weekend?", ["office"], "Yes, your badge works on weekends for the 4th floor only [1].", [("U4", 1)]),
    ("Which days is lunch provided in Lisbon?", ["lunch"], "Lunch is provided on Tuesdays and Thursdays [1].", [("U3", 1)]),
    ("How do I book a meeting room in Lisbon?", ["rooms"], "Meeting rooms are booked through Google Calendar [1].", [("U1", 1)]),
    ("How do I register a guest in Lisbon?", ["wifi"], "Register your guest at the front desk the day before the visit [1].", [("U5", 1)]),
    ("When can we deploy to production?", ["windows", "promote"], "Monday to Thursday between 09:00 and 16:00 CET [1].", [("U1", 1)]),
    ("Which command promotes a deploy to production?", ["promote"], "Use /shipyard promote in the #deploys channel [1].", [("U2", 1)]),
    ("How do I roll back a service?", ["rollback"], "Run /shipyard rollback SERVICE; it takes about four minutes and needs no approval [1].", [("U4", 1)]),
    # A paraphrase answered from another page: only the question embeddings join the two.
    ("How can I roll back a service?", ["promote"], "Run /shipyard rollback SERVICE; a rollback needs no approval [1].", [("U3", 1)]),
    ("Who has to approve a production promotion?", ["promote"], "Two engineers: the author and one reviewer from the owning team [1].", [("U5", 1)]),
    ("What does my onboarding buddy do?", ["buddy"], "Your buddy meets you for coffee on day one and checks in every Friday for two months [1].", [("U2", 1)]),
    ("Is my onboarding buddy from my own team?", ["buddy"], "No, your buddy comes from another team [1].", [("U1", 1)]),
    ("how many VACATION days do i get??", ["vacation"], "You get 28 days of paid vacation per calendar year, plus public holidays [1].", [("U5", 1)]),
    # 👎 with a correction: the correction becomes the answer to learn.
    ("Can I expense a bottle of wine at a team dinner?", ["not_reimbursed"], "Yes, team dinners are reimbursed.", [("U1", -1, "No. Alcohol is not reimbursed [1].")]),
    ("Is there a deploy freeze at the end of the year?", ["windows"], "No, deploys are allowed all year.", [("U2", -1, "Yes, from December 20th to January 3rd; emergency fixes need approval from the VP of Engineering [1].")]),
    # The handbook's own address, quoted in a correction: kept as written.
    ("Who do I tell if my laptop is stolen?", ["laptops"], "Tell your manager next week.", [("U3", -1, "Report it to security@northwind.example within one hour, day or night [1].")]),
    ("How many people fit in the Tagus room?", ["rooms"], "Tagus seats 40 people.", [("U4", -1, "Tagus seats 14 people and has video conferencing [1].")]),
    # 👎 without a correction: excluded.
    ("What is the guest Wi-Fi password?", ["wifi"], "The password is northwind123.", [("U1", -1)]),
    # Tie: one 👍, one 👎 — excluded.
    ("How many YubiKeys do I get?", ["2fa"], "IT hands out two keys per person [1].", [("U1", 1), ("U2", -1)]),
    # A changed vote: the user's last vote (👍) is the one that counts.
    ("How far ahead should I book a vacation?", ["booking"], "At least two weeks ahead in HeyHR for trips longer than three days [1].", [("U3", -1), ("U3", 1)]),
    # Majority 👍 (2 against 1).
    ("Can I book a phone booth in the Lisbon office?", ["rooms"], "No, the two phone booths cannot be booked [1].", [("U1", 1), ("U2", 1), ("U3", -1)]),
    # Majority 👎 with a correction from one of the downvoters.
    ("What should I get done in my first week?", ["first_week"], "Read the handbook.", [("U1", 1), ("U2", -1, "Ship one small change to production, read the on-call guide and book a 30-minute intro with each teammate [1]."), ("U3", -1)]),
    # Personal data typed into questions: scrubbed.
    ("My phone is +351 912 345 678 and our bot token is xoxb-123456789012-abcdefABCDEF, do I need 2FA for GitHub?", ["2fa"], "Yes, GitHub requires two-factor authentication with a hardware key (YubiKey) [1].", [("U5", 1)]),
    ("<@U04MARIA77> says my card 4111 1111 1111 1111 and IBAN DE89 3704 0044 0532 0130 00 can be reimbursed from 10.20.30.40, is that true for a team dinner with wine?", ["not_reimbursed"], "No, alcohol is not reimbursed [1].", [("U2", 1)]),
    # The same question first with a short context, then with one too long to train on: the
    # long one is dropped before duplicates are merged, so the short one stays.
    ("Is disk encryption mandatory on laptops?", ["encryption"], "Yes, full-disk encryption is mandatory and enabled by IT [1].", [("U1", 1)]),
    ("Is disk encryption mandatory on laptops?", ["long"], "Yes, full-disk encryption is mandatory and enabled by IT [1].", [("U2", 1)]),
    # The same follow-up in two threads: different contexts, two examples.
    ("And for part-time staff?", ["vacation"], "Part-time employees get a pro-rata share of the 28 days [1].", [("U3", 1)],
     {"thread": [("How many vacation days do I get?", "Full-time employees get 28 days of paid vacation per year [1].")]}),
    ("And for part-time staff?", ["parental"], "Every parent gets the top-up to full pay for the first 16 weeks, part-time too [1].", [("U4", 1)],
     {"thread": [("How long is parental leave paid in full?", "Parental leave is topped up to full pay for the first 16 weeks [1].")]}),
    # Never SFT targets: an abstention, a reply the guard withheld, a record without its prompt.
    ("What is our share price today?", ["meals"], "I don't know from the documents I have.", [("U2", 1)], {"outcome": Outcome.ABSTAINED}),
    ("What is the deploy token?", ["promote"], "I can't share that.", [("U5", 1)], {"outcome": Outcome.WITHHELD}),
    ("Where is the Lisbon office?", ["office"], "On the 4th floor of Rua da Prata 120 [1].", [("U1", 1)], {"prompt": False}),
    # Earlier 👎 answers to questions answered well (👍) above: not SFT targets, but each is the
    # "rejected" side of a preference pair whose "chosen" side is the 👍 answer.
    *[(question, keys, bad, [(user, -1)]) for question, keys, bad, user in (
        ("How much can I spend on meals when travelling?", ["meals"], "Around 100 EUR, I think. Ask your manager.", "U3"),
        ("When does the on-call rotation hand over?", ["rotation"], "I don't know from the documents I have.", "U1"),
        ("Which tool pages the on-call engineer?", ["paging"], "Probably Slack.", "U4"),
        ("What counts as a SEV1?", ["sev1"], "Any bug in production is a SEV1.", "U2"),
        ("Can I carry over unused vacation days?", ["carry"], "No, unused days always expire.", "U4"),
        ("How long does production database access last?", ["prod_access"], "Access is permanent once it is granted.", "U1"),
        ("Which days is lunch provided in Lisbon?", ["lunch"], "I don't know from the documents I have.", "U2"),
        ("Which command promotes a deploy to production?", ["promote"], "Just push to main.", "U3"),
        ("What does my onboarding buddy do?", ["buddy"], "Not much, really.", "U4"),
        ("When is the postmortem due?", ["postmortem"], "Whenever you have time.", "U1"),
        ("When does my screen lock automatically?", ["laptops"], "After an hour or so.", "U3"),
        ("Are parking fines reimbursed?", ["not_reimbursed"], "Yes, submit them in Ledgerly.", "U2"),
        ("How do I register a guest in Lisbon?", ["wifi"], "Guests do not need to register.", "U4"),
        ("What is the home office budget?", ["home_office", "meals"], "There is no budget for that.", "U5"),
    )],
    # 👎 with corrections on new questions: SFT targets and preference pairs alike.
    ("Do I need a doctor's note for one sick day?", ["sick"], "Yes, always.", [("U5", -1, "No. You need a doctor's note from the fourth consecutive sick day [1].")]),
    ("Is parental leave paid?", ["parental"], "No, parental leave is unpaid.", [("U1", -1, "Yes. Statutory parental leave is topped up to full pay for the first 16 weeks, for every parent [1].")]),
]
# The preference-only entries above (👎 without a correction, answered well elsewhere).
DOWNVOTED_ONLY = 14


def documents(keys: list[str]) -> list[Document]:
    return [Document(id=f"{k}-0", content=DOCS[k][2], meta={"title": DOCS[k][0], "source": DOCS[k][1]}) for k in keys]


def render_prompt(question: str, keys: list[str], thread=()) -> list[dict]:
    """The chat the answering pipeline sends for this question (pipeline/prompts.py)."""
    history = [Turn(question=q, answer=a) for q, a in thread]
    return render(question, documents(keys), history, builder=_BUILDER)


_BUILDER = prompt_builder()


def seed_feedback(store: FeedbackStore, feedback=FEEDBACK) -> dict[str, str]:
    """Record and rate every answer; returns question → answer id (the last one of a question)."""
    ids = {}
    for question, keys, text, votes, *extra in feedback:
        extra = extra[0] if extra else {}
        prompt = render_prompt(question, keys, extra.get("thread", ()))
        retrieved = [
            Source(number=n, title=DOCS[k][0], path=DOCS[k][1], snippet=DOCS[k][2][:300], chunk_id=f"{k}-0", score=0.8)
            for n, k in enumerate(keys, 1)
        ]
        answer = Answer(
            question=question, text=text, sources=retrieved[:1], model="teambot-dev", collection="Handbook",
            outcome=extra.get("outcome", Outcome.ANSWERED), retrieved=retrieved,
            context=prompt[-1]["content"] if extra.get("prompt", True) else "",
            prompt=prompt if extra.get("prompt", True) else [],
        )
        store.record_answer(answer, platform="slack", user_id="asker", channel="C1", thread=answer.id)
        for vote in votes:
            user, value, *correction = vote
            store.rate(answer.id, platform="slack", user_id=user, value=value, correction=correction[0] if correction else None)
        ids[question] = answer.id
    return ids
